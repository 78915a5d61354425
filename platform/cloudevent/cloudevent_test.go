package cloudevent

import (
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
)

func sampleEvent() *eventv1.Event {
	return &eventv1.Event{
		Id:              "evt_1NqK2",
		Source:          "stripe",
		Type:            "invoice.paid",
		SpecVersion:     "1.0",
		Time:            timestamppb.New(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)),
		DataContentType: "application/json",
		Subject:         "in_123",
		Tenant:          "acme",
		Data:            []byte(`{"id":"evt_1NqK2", "amount": 10 }` + "\n"),
		Extensions:      map[string]string{"traceparent": "00-abc-def-01", "attempt": "3"},
	}
}

func TestRoutingKey(t *testing.T) {
	if got := RoutingKey("stripe", "invoice.paid"); got != "stripe.invoice.paid" {
		t.Fatalf("RoutingKey = %q", got)
	}
}

func TestToPublishingWireFormat(t *testing.T) {
	ev := sampleEvent()
	msg, err := ToPublishing(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          "evt_1NqK2",
		"ce-source":      "/sources/stripe",
		"ce-type":        "invoice.paid",
		"ce-time":        "2024-05-06T07:08:09.123456789Z",
		"ce-subject":     "in_123",
		"ce-tenant":      "acme",
		"ce-traceparent": "00-abc-def-01",
		"ce-attempt":     "3",
	}
	for k, v := range want {
		if got, _ := msg.Headers[k].(string); got != v {
			t.Errorf("header %s = %#v, want %q", k, msg.Headers[k], v)
		}
	}
	if len(msg.Headers) != len(want) {
		t.Errorf("headers = %v, want exactly %d", msg.Headers, len(want))
	}
	if string(msg.Body) != string(ev.Data) {
		t.Errorf("body changed: %q", msg.Body)
	}
	if msg.MessageId != ev.Id || msg.Type != ev.Type || msg.ContentType != "application/json" {
		t.Errorf("properties: id %q type %q content-type %q", msg.MessageId, msg.Type, msg.ContentType)
	}
	if msg.DeliveryMode != amqp.Persistent {
		t.Errorf("delivery mode = %d, want persistent", msg.DeliveryMode)
	}
	if !msg.Timestamp.Equal(ev.Time.AsTime()) {
		t.Errorf("timestamp = %v", msg.Timestamp)
	}
	if err := msg.Headers.Validate(); err != nil {
		t.Errorf("headers not valid AMQP: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	cases := map[string]*eventv1.Event{
		"full": sampleEvent(),
		"minimal": {
			Id: "1", Source: "github", Type: "push",
		},
		"uri source": {
			Id: "2", Source: "urn:example:thing", Type: "x", SpecVersion: "1.0",
			Time: timestamppb.New(time.Unix(0, 0)),
		},
		"binary body": {
			Id: "3", Source: "hmac", Type: "a.b.c", Data: []byte{0, 0xff, 0xfe, '\n', 0},
			DataContentType: "application/octet-stream",
		},
	}
	for name, ev := range cases {
		t.Run(name, func(t *testing.T) {
			msg, err := ToPublishing(ev)
			if err != nil {
				t.Fatal(err)
			}
			// A delivery carries the same fields the publishing had.
			got, err := FromDelivery(amqp.Delivery{
				Headers: msg.Headers, ContentType: msg.ContentType, Body: msg.Body,
				MessageId: msg.MessageId, Type: msg.Type, Timestamp: msg.Timestamp,
			})
			if err != nil {
				t.Fatal(err)
			}
			want := proto.Clone(ev).(*eventv1.Event)
			want.SpecVersion = SpecVersion
			if !proto.Equal(got, want) {
				t.Fatalf("round trip:\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestToPublishingRejects(t *testing.T) {
	long := strings.Repeat("x", 256)
	cases := map[string]func(*eventv1.Event){
		"no id":              func(e *eventv1.Event) { e.Id = "" },
		"no source":          func(e *eventv1.Event) { e.Source = "" },
		"no type":            func(e *eventv1.Event) { e.Type = "" },
		"long id":            func(e *eventv1.Event) { e.Id = long },
		"long type":          func(e *eventv1.Event) { e.Type = long },
		"bad specversion":    func(e *eventv1.Event) { e.SpecVersion = "0.3" },
		"reserved extension": func(e *eventv1.Event) { e.Extensions = map[string]string{"id": "x"} },
		"upper extension":    func(e *eventv1.Event) { e.Extensions = map[string]string{"Trace": "x"} },
		"dash extension":     func(e *eventv1.Event) { e.Extensions = map[string]string{"a-b": "x"} },
		"bad utf8 subject":   func(e *eventv1.Event) { e.Subject = "\xff" },
		"invalid time":       func(e *eventv1.Event) { e.Time = &timestamppb.Timestamp{Nanos: -1} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			ev := sampleEvent()
			mutate(ev)
			if _, err := ToPublishing(ev); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := ToPublishing(nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil event: err = %v", err)
	}
}

func validHeaders() amqp.Table {
	return amqp.Table{
		"ce-specversion": "1.0",
		"ce-id":          "id-1",
		"ce-source":      "/sources/shopify",
		"ce-type":        "orders.create",
	}
}

func TestFromDeliveryLenient(t *testing.T) {
	h := amqp.Table{
		"CE-SpecVersion":     []byte("1.0"),
		"ce-ID":              []byte("id-1"),
		"ce-source":          "/sources/shopify",
		"ce-type":            "orders.create",
		"ce-time":            time.Unix(1700000000, 0),
		"ce-retries":         int32(4),
		"ce-sampled":         true,
		"x-death":            []any{amqp.Table{"count": int64(1)}},
		"other":              amqp.Table{"nested": "ignored"},
		"ce-datacontenttype": "text/plain",
	}
	ev, err := FromDelivery(amqp.Delivery{Headers: h, Body: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Id != "id-1" || ev.Source != "shopify" || ev.Type != "orders.create" {
		t.Fatalf("core attributes: %v", ev)
	}
	if ev.Time.AsTime().Unix() != 1700000000 {
		t.Errorf("time = %v", ev.Time.AsTime())
	}
	if ev.Extensions["retries"] != "4" || ev.Extensions["sampled"] != "true" || len(ev.Extensions) != 2 {
		t.Errorf("extensions = %v", ev.Extensions)
	}
	if ev.DataContentType != "text/plain" {
		t.Errorf("datacontenttype = %q", ev.DataContentType)
	}
	if ev.Source != "shopify" {
		t.Errorf("source = %q", ev.Source)
	}

	// A ce-source from a foreign producer is kept as is.
	h2 := validHeaders()
	h2["ce-source"] = "https://example.com/things"
	ev, err = FromDelivery(amqp.Delivery{Headers: h2})
	if err != nil || ev.Source != "https://example.com/things" {
		t.Fatalf("foreign source: %v, %v", ev, err)
	}
}

func TestFromDeliveryRejects(t *testing.T) {
	cases := map[string]func(amqp.Table){
		"no headers":         func(h amqp.Table) { clear(h) },
		"no specversion":     func(h amqp.Table) { delete(h, "ce-specversion") },
		"specversion 0.3":    func(h amqp.Table) { h["ce-specversion"] = "0.3" },
		"no id":              func(h amqp.Table) { delete(h, "ce-id") },
		"empty type":         func(h amqp.Table) { h["ce-type"] = "" },
		"int id":             func(h amqp.Table) { h["ce-id"] = int64(5) },
		"table source":       func(h amqp.Table) { h["ce-source"] = amqp.Table{"a": "b"} },
		"nil type":           func(h amqp.Table) { h["ce-type"] = nil },
		"bad time":           func(h amqp.Table) { h["ce-time"] = "yesterday" },
		"float time":         func(h amqp.Table) { h["ce-time"] = 1.5 },
		"year 10000":         func(h amqp.Table) { h["ce-time"] = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"duplicate by case":  func(h amqp.Table) { h["CE-ID"] = "other" },
		"duplicate time":     func(h amqp.Table) { h["ce-time"] = "2024-01-01T00:00:00Z"; h["Ce-Time"] = "2024-01-01T00:00:00Z" },
		"invalid utf8":       func(h amqp.Table) { h["ce-subject"] = []byte{0xff, 0xfe} },
		"bad extension name": func(h amqp.Table) { h["ce-trace_id"] = "x" },
		"empty extension":    func(h amqp.Table) { h["ce-"] = "x" },
		"array extension":    func(h amqp.Table) { h["ce-list"] = []any{"a"} },
		"huge attribute":     func(h amqp.Table) { h["ce-subject"] = strings.Repeat("s", 5000) },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			h := validHeaders()
			mutate(h)
			if ev, err := FromDelivery(amqp.Delivery{Headers: h}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, %v; want ErrInvalid", ev, err)
			}
		})
	}
	if _, err := FromDelivery(amqp.Delivery{Headers: validHeaders()}); err != nil {
		t.Fatalf("valid headers rejected: %v", err)
	}
}
