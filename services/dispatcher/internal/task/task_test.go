package task

import (
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestTaskRoundTrip(t *testing.T) {
	in := &Task{
		Tenant: "acme", Message: "m1", Endpoint: "ep1", Attempts: 3, Deferrals: 4, Before: 2,
		RoutingKey: "stripe.invoice.paid", ContentType: "application/json",
		EventTime: time.UnixMilli(1700000000123), NotBefore: time.UnixMilli(1700000005000),
		Delivered: true, Copy: "c1", Body: []byte("{\"raw\": \xff}"),
	}
	p := in.Publishing()
	out, err := Decode(amqp.Delivery{Headers: p.Headers, ContentType: p.ContentType, Body: p.Body})
	if err != nil {
		t.Fatal(err)
	}
	if out.Tenant != in.Tenant || out.Message != in.Message || out.Endpoint != in.Endpoint ||
		out.Attempts != in.Attempts || out.Deferrals != in.Deferrals || out.Before != in.Before || out.RoutingKey != in.RoutingKey ||
		out.ContentType != in.ContentType || !out.EventTime.Equal(in.EventTime) ||
		!out.NotBefore.Equal(in.NotBefore) || out.Delivered != in.Delivered || out.Copy != in.Copy || string(out.Body) != string(in.Body) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	// A task from before the deferral count existed decodes as never deferred.
	delete(p.Headers, HeaderDeferrals)
	if out, err := Decode(amqp.Delivery{Headers: p.Headers, Body: p.Body}); err != nil || out.Deferrals != 0 {
		t.Fatalf("without %s: %+v, %v", HeaderDeferrals, out, err)
	}
}

// An event id may be up to 255 bytes; the task's message id is an AMQP
// short string, and a longer one fails to encode and closes the shared
// connection.
func TestTaskIDFitsShortString(t *testing.T) {
	long := strings.Repeat("e", 255)
	seen := map[string]bool{}
	for _, tc := range []Task{
		{Tenant: "acme", Message: long, Endpoint: "ep_0123456789abcdef0123456789"},
		{Tenant: strings.Repeat("t", 200), Message: long, Endpoint: strings.Repeat("p", 100)},
		{Tenant: "acme", Message: "m1", Endpoint: "ep1"},
		{Tenant: "acme", Message: "m1", Endpoint: "ep2"},
		{Tenant: "acme", Message: "m1/ep", Endpoint: "2"},
		{Tenant: "other", Message: "m1", Endpoint: "ep1"},
	} {
		p := tc.Publishing()
		if len(p.MessageId) > 255 {
			t.Errorf("task id of %d bytes for message of %d bytes", len(p.MessageId), len(tc.Message))
		}
		if seen[p.MessageId] {
			t.Errorf("task id %q given to two tasks", p.MessageId)
		}
		seen[p.MessageId] = true
		out, err := Decode(amqp.Delivery{Headers: p.Headers, MessageId: p.MessageId, Body: p.Body})
		if err != nil || out.Message != tc.Message || out.Endpoint != tc.Endpoint || out.Tenant != tc.Tenant {
			t.Errorf("decoded %+v, %v; want ids of %+v", out, err, tc)
		}
		if got := tc.ID(); got != p.MessageId {
			t.Errorf("ID() = %q, publishing has %q", got, p.MessageId)
		}
	}
}
