package dispatcher

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
)

// deadLetters lists the harness tenant's dead letters by message id.
func (h *harness) deadLetters() map[string]*dispatcherv1.DeadLetter {
	h.t.Helper()
	out := map[string]*dispatcherv1.DeadLetter{}
	token := ""
	for {
		res, err := h.d.Messages.ListDeadLetters(h.ctx(), &dispatcherv1.ListDeadLettersRequest{PageSize: 100, PageToken: token})
		if err != nil {
			h.t.Fatalf("list dead letters: %v", err)
		}
		for _, dl := range res.GetDeadLetters() {
			out[dl.GetMessageId()] = dl
		}
		if token = res.GetNextPageToken(); token == "" {
			return out
		}
	}
}

// rejectOne takes one message from queue and rejects it without requeue:
// the broker dead-letters it, as it does at the delivery limit.
func rejectOne(t *testing.T, ch *amqp.Channel, queue string) {
	t.Helper()
	waitFor(t, 10*time.Second, "a message in "+queue, func() bool {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if err := d.Reject(false); err != nil {
				t.Fatal(err)
			}
		}
		return ok
	})
}

// Whatever the broker dead-letters from the dispatcher's queues, an event
// or a delivery task, is a dead letter in the API: listed with a reason,
// counted, and delivered when resent.
func TestBrokerDeadLettersAreListedAndResendable(t *testing.T) {
	// Without the fast path, so that the fan-out leaves a task to reject.
	h := newHarness(t, loopback, func(c *Config) { c.FirstAttemptBudget = 0 })
	s := newSink(t, ok)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.stop()
	admin := adminChannel(t)
	q := h.cfg.Queues()

	// A task, dead-lettered from the deliveries queue.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = h.d.RunFanout(ctx) }()
	h.publish("evt-task", "a.b", []byte(`{"n":1}`))
	waitFor(t, 10*time.Second, "the task", func() bool { return queueDepth(t, admin, q.Deliveries) == 1 })
	cancel()
	wg.Wait()
	rejectOne(t, admin, q.Deliveries)

	// An event, dead-lettered from the events queue.
	h.publish("evt-event", "a.b", []byte(`{"n":2}`))
	rejectOne(t, admin, q.Events)

	h.start()
	var dls map[string]*dispatcherv1.DeadLetter
	waitFor(t, 15*time.Second, "both dead letters listed", func() bool {
		dls = h.deadLetters()
		return dls["evt-task"] != nil && dls["evt-event"] != nil
	})
	if dl := dls["evt-task"]; dl.GetEndpointId() != ep.GetId() || !strings.Contains(dl.GetReason(), "rejected") {
		t.Errorf("task dead letter: %v", dl)
	}
	if dl := dls["evt-event"]; dl.GetEndpointId() != "" || !strings.Contains(dl.GetReason(), "rejected") {
		t.Errorf("event dead letter: %v", dl)
	}
	if st := h.deliveryStatus("evt-task", ep.GetId()); st != "failed" {
		t.Errorf("task's delivery is %q, want failed", st)
	}
	if n := h.counter("hookyard_dispatcher_dead_letters_total", nil); n != 2 {
		t.Errorf("dead letters counted: %v, want 2", n)
	}
	for _, id := range []string{"evt-task", "evt-event"} {
		if _, err := h.d.Messages.ResendMessage(h.ctx(), &dispatcherv1.ResendMessageRequest{Id: id}); err != nil {
			t.Fatalf("resend %s: %v", id, err)
		}
	}
	for _, id := range []string{"evt-task", "evt-event"} {
		waitFor(t, 10*time.Second, id+" delivered after resend", func() bool { return h.deliveryStatus(id, ep.GetId()) == "delivered" })
	}
	if dls := h.deadLetters(); len(dls) != 0 {
		t.Errorf("dead letters left after resend: %v", dls)
	}
}

// An event whose fan-out fails again and again (here: a corrupt endpoint
// record) ends, after a bounded number of tries, as a dead letter with the
// reason, instead of being put back for ever.
func TestRepeatingFanoutErrorEndsAsDeadLetter(t *testing.T) {
	h := newHarness(t, loopback, nil)
	h.d.Fanout.RetryDelay = 10 * time.Millisecond
	h.d.Fanout.MaxPutBacks = 5
	h.d.Fanout.MinFailingTime = 0
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: "http://127.0.0.1:1/"})
	key := h.cfg.KeyPrefix + ":ep:{" + h.tenant + "}:" + ep.GetId()
	if err := h.rdb.HSet(context.Background(), key, "data", "{corrupt").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the endpoint cache
	h.publish("evt-corrupt", "a.b", []byte(`{}`))
	var dl *dispatcherv1.DeadLetter
	waitFor(t, 30*time.Second, "the event listed as a dead letter", func() bool {
		dl = h.deadLetters()["evt-corrupt"]
		return dl != nil
	})
	if !strings.Contains(dl.GetReason(), "decode endpoint") || !strings.Contains(dl.GetReason(), "5 tries") {
		t.Fatalf("reason %q", dl.GetReason())
	}
	if n := h.counter("hookyard_dispatcher_fanout_events_total", map[string]string{"result": "error"}); n != 5 {
		t.Fatalf("%v failed fan-outs, want 5", n)
	}
}

// Quorum queues on RabbitMQ 3.10 count every return towards the delivery
// limit, lost connections included: an event the broker dead-lettered for
// its delivery limit is put back and delivered, not left as a dead letter.
func TestDeliveryLimitDeadLetterIsRevived(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, ok)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: "evt-limit", Source: h.id, Type: "a.b", Tenant: h.tenant, Time: timestamppb.Now(),
		DataContentType: "application/json", Data: []byte(`{}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	q := h.cfg.Queues()
	msg.Headers["x-death"] = []any{amqp.Table{"reason": "delivery_limit", "queue": q.Events, "count": int64(1)}}
	msg.Headers["x-hookyard-routing-key"] = h.id + ".a.b"
	if err := h.d.Publisher.Publish(context.Background(), "", rabbit.DLQName(q.Events), msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "delivery", func() bool { return h.deliveryStatus("evt-limit", ep.GetId()) == "delivered" })
	if dls := h.deadLetters(); len(dls) != 0 {
		t.Fatalf("dead letters: %v", dls)
	}
}
