package dispatcher

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
)

// publishFrom publishes an event of another source of the harness's
// tenant; the source must be bound (see renameHarness).
func (h *harness) publishFrom(source, id, typ string, body []byte) {
	h.t.Helper()
	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: id, Source: source, Type: typ, Tenant: h.tenant, Time: timestamppb.Now(),
		DataContentType: "application/json", Data: body,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.d.Publisher.Publish(context.Background(), rabbit.EventsExchange, cloudevent.RoutingKey(source, typ), msg); err != nil {
		h.t.Fatal(err)
	}
}

// s1 sends E1, s3 sends "s2:E1", then s2 sends E1: the rename of s2's E1
// must not collide with s3's event, and all three are delivered, each
// once, under three ids.
func TestRenamedIDsCannotCollide(t *testing.T) {
	var s2, s3 string
	h := newHarness(t, loopback, func(c *Config) {
		base := c.EventBindings[:len(c.EventBindings)-2]
		s2, s3 = base+"b", base+"c"
		c.EventBindings += "," + s2 + ".#," + s3 + ".#"
	})
	s := newSink(t, ok)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.publish("E1", "a.b", []byte(`{"from":"s1"}`))
	waitFor(t, 10*time.Second, "s1's delivery", func() bool { return h.deliveryStatus("E1", ep.GetId()) == "delivered" })
	h.publishFrom(s3, s2+":E1", "a.b", []byte(`{"from":"s3"}`))
	waitFor(t, 10*time.Second, "s3's delivery", func() bool { return h.deliveryStatus(s2+":E1", ep.GetId()) == "delivered" })
	h.publishFrom(s2, "E1", "a.b", []byte(`{"from":"s2"}`))
	waitFor(t, 15*time.Second, "s2's delivery", func() bool { return len(s.all()) >= 3 })
	time.Sleep(300 * time.Millisecond)
	bodies := map[string]string{}
	for _, r := range s.all() {
		if prev, dup := bodies[r.header.Get("webhook-id")]; dup {
			t.Fatalf("webhook-id %q delivered twice (%s, %s)", r.header.Get("webhook-id"), prev, r.body)
		}
		bodies[r.header.Get("webhook-id")] = string(r.body)
	}
	if len(bodies) != 3 || bodies["E1"] != `{"from":"s1"}` || bodies[s2+":E1"] != `{"from":"s3"}` {
		t.Fatalf("deliveries by webhook-id: %v", bodies)
	}
	// s2's event is delivered under an id of its own, and a replay of it
	// is recognised as the same message.
	h.publishFrom(s2, "E1", "a.b", []byte(`{"from":"s2"}`))
	time.Sleep(time.Second)
	if n := len(s.all()); n != 3 {
		t.Fatalf("%d deliveries after s2 replayed E1, want 3", n)
	}
}
