package task

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestTaskRoundTrip(t *testing.T) {
	in := &Task{
		Tenant: "acme", Message: "m1", Endpoint: "ep1", Attempts: 3, Deferrals: 4,
		RoutingKey: "stripe.invoice.paid", ContentType: "application/json",
		EventTime: time.UnixMilli(1700000000123), NotBefore: time.UnixMilli(1700000005000),
		Body: []byte("{\"raw\": \xff}"),
	}
	p := in.Publishing()
	out, err := Decode(amqp.Delivery{Headers: p.Headers, ContentType: p.ContentType, Body: p.Body})
	if err != nil {
		t.Fatal(err)
	}
	if out.Tenant != in.Tenant || out.Message != in.Message || out.Endpoint != in.Endpoint ||
		out.Attempts != in.Attempts || out.Deferrals != in.Deferrals || out.RoutingKey != in.RoutingKey ||
		out.ContentType != in.ContentType || !out.EventTime.Equal(in.EventTime) ||
		!out.NotBefore.Equal(in.NotBefore) || string(out.Body) != string(in.Body) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	// A task from before the deferral count existed decodes as never deferred.
	delete(p.Headers, HeaderDeferrals)
	if out, err := Decode(amqp.Delivery{Headers: p.Headers, Body: p.Body}); err != nil || out.Deferrals != 0 {
		t.Fatalf("without %s: %+v, %v", HeaderDeferrals, out, err)
	}
}
