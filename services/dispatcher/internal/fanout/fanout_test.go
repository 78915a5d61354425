package fanout

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/metrics"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// acks records what Handle did with the event delivery.
type acks struct {
	mu            sync.Mutex
	acked, nacked int
	requeued      bool
	ackedCh       chan struct{}
	once          sync.Once
}

func newAcks() *acks { return &acks{ackedCh: make(chan struct{})} }

func (a *acks) Ack(uint64, bool) error {
	a.mu.Lock()
	a.acked++
	a.mu.Unlock()
	a.once.Do(func() { close(a.ackedCh) })
	return nil
}

func (a *acks) Nack(_ uint64, _ bool, requeue bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nacked++
	a.requeued = requeue
	return nil
}

func (a *acks) Reject(tag uint64, requeue bool) error { return a.Nack(tag, false, requeue) }

func (a *acks) counts() (int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acked, a.nacked
}

// deliverer is the fast path's attempt (deliver.Worker in the service):
// each call blocks until release is closed, then answers err.
type deliverer struct {
	mu      sync.Mutex
	calls   []string // endpoint ids
	started chan string
	release chan struct{}
	err     error
}

func newDeliverer(err error) *deliverer {
	return &deliverer{started: make(chan string, 16), release: make(chan struct{}), err: err}
}

func (d *deliverer) Deliver(ctx context.Context, t *task.Task) error {
	d.mu.Lock()
	d.calls = append(d.calls, t.Endpoint)
	d.mu.Unlock()
	d.started <- t.Endpoint
	select {
	case <-d.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return d.err
}

func (d *deliverer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.calls)
}

type env struct {
	t      *testing.T
	f      *Fanout
	q      task.Queues
	ch     *amqp.Channel
	tenant string
	source string
	eps    []string
}

// newEnv sets up a Fanout on the real broker and Redis, with its own
// queues and keys, and n endpoints matching every event of the source.
func newEnv(t *testing.T, n int, first Deliverer, budget time.Duration) *env {
	t.Helper()
	id := testenv.ID()
	prefix := testenv.KeyPrefix(id)
	rdb := testenv.Redis(t, prefix)
	q := task.NewQueues("hookyard.test."+id, []string{id + ".#"})
	conn := testenv.Rabbit(t, q.Declare)
	t.Cleanup(func() { testenv.DeleteQueues(q.All(), q.Delays().Exchange()) })
	e := &env{t: t, q: q, tenant: "acme", source: id}
	epStore := endpoint.New(rdb, prefix)
	for range n {
		ep, err := epStore.Create(context.Background(), e.tenant, &dispatcherv1.Endpoint{Url: "https://example.com/hook", EventTypes: []string{id + ".#"}})
		if err != nil {
			t.Fatal(err)
		}
		e.eps = append(e.eps, ep.GetId())
	}
	e.f = New(q, epStore, message.New(rdb, prefix, time.Hour), rabbit.NewPublisher(conn, rabbit.PublisherConfig{}), metrics.New(nil), slog.New(slog.DiscardHandler))
	e.f.RetryDelay = time.Millisecond
	if first != nil {
		e.f.First, e.f.FirstAttemptBudget = first, budget
	}
	ch, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	e.ch = ch
	return e
}

// event returns a delivery of a new event as the fan-out consumes it.
func (e *env) event(id string, a *acks) amqp.Delivery {
	e.t.Helper()
	p, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: id, Source: e.source, Type: "a", Tenant: e.tenant, Time: timestamppb.Now(),
		DataContentType: "application/json", Data: []byte(`{"n":1}`),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return amqp.Delivery{Acknowledger: a, Headers: p.Headers, ContentType: p.ContentType, MessageId: p.MessageId,
		Body: p.Body, RoutingKey: cloudevent.RoutingKey(e.source, "a")}
}

// tasks takes the tasks waiting on the deliveries queue.
func (e *env) tasks() []*task.Task {
	e.t.Helper()
	var out []*task.Task
	for {
		d, ok, err := e.ch.Get(e.q.Deliveries, true)
		if err != nil {
			e.t.Fatal(err)
		}
		if !ok {
			return out
		}
		tk, err := task.Decode(d)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, tk)
	}
}

// TestEventLagIsObserved: each consumed event's age (from its CloudEvent
// time) goes into the event-lag histogram, so an operator sees how long
// events wait in the broker even when its queue never looks deep.
func TestEventLagIsObserved(t *testing.T) {
	e := newEnv(t, 1, nil, 0)
	old := e.event("old", newAcks())
	p, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: "old", Source: e.source, Type: "a", Tenant: e.tenant, Time: timestamppb.New(time.Now().Add(-3 * time.Second)),
		DataContentType: "application/json", Data: []byte(`{"n":1}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	old.Headers = p.Headers
	e.f.Handle(context.Background(), old)
	e.f.Handle(context.Background(), e.event("new", newAcks()))
	var m dto.Metric
	if err := e.f.metrics.EventLag.Write(&m); err != nil {
		t.Fatal(err)
	}
	h := m.GetHistogram()
	if h.GetSampleCount() != 2 {
		t.Fatalf("event lag observed %d times, want 2", h.GetSampleCount())
	}
	if sum := h.GetSampleSum(); sum < 3 || sum > 60 {
		t.Fatalf("event lag sum %.3fs, want the 3s old event's age and a fresh one's", sum)
	}
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == 1 && b.GetCumulativeCount() != 1 {
			t.Fatalf("%d events within 1s of their time, want 1 (the fresh one)", b.GetCumulativeCount())
		}
	}
}

// The event is acked only once every first attempt has its outcome; with
// each attempt done, no task is published.
func TestAckWaitsForEveryFirstAttempt(t *testing.T) {
	d := newDeliverer(nil)
	e := newEnv(t, 3, d, time.Hour)
	a := newAcks()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.f.Handle(context.Background(), e.event("e1", a))
	}()
	for range 3 {
		<-d.started
	}
	if acked, nacked := a.counts(); acked+nacked != 0 {
		t.Fatalf("event settled (acked %d, nacked %d) while its first attempts run", acked, nacked)
	}
	close(d.release)
	<-done
	if acked, nacked := a.counts(); acked != 1 || nacked != 0 {
		t.Fatalf("acked %d, nacked %d; want one ack", acked, nacked)
	}
	if ts := e.tasks(); len(ts) != 0 {
		t.Fatalf("%d tasks published for deliveries the fast path made", len(ts))
	}
}

// Without the fast path, the event is acked once each delivery's task is
// confirmed: the tasks are on the queue when Handle acks.
func TestAckAfterEveryTaskIsConfirmed(t *testing.T) {
	e := newEnv(t, 3, nil, 0)
	a := newAcks()
	e.f.Handle(context.Background(), e.event("e1", a))
	if acked, _ := a.counts(); acked != 1 {
		t.Fatalf("acked %d, want 1", acked)
	}
	testenv.WaitFor(t, 10*time.Second, "three tasks", func() bool {
		n, err := e.ch.QueueDeclarePassive(e.q.Deliveries, true, false, false, false, nil)
		return err == nil && n.Messages == 3
	})
	got := map[string]bool{}
	for _, tk := range e.tasks() {
		got[tk.Endpoint] = true
	}
	for _, ep := range e.eps {
		if !got[ep] {
			t.Errorf("no task for endpoint %s", ep)
		}
	}
}

// A first attempt that could write neither its outcome nor its task puts
// the event back (a copy at the tail of the events queue, counting the
// try) instead of acking it as done.
func TestFailedFirstAttemptPutsEventBack(t *testing.T) {
	d := newDeliverer(errors.New("injected: Redis down"))
	close(d.release)
	e := newEnv(t, 1, d, time.Hour)
	a := newAcks()
	e.f.Handle(context.Background(), e.event("e1", a))
	if acked, nacked := a.counts(); acked != 1 || nacked != 0 {
		t.Fatalf("acked %d, nacked %d; want the original acked once its copy is confirmed", acked, nacked)
	}
	var back amqp.Delivery
	testenv.WaitFor(t, 10*time.Second, "the event put back", func() bool {
		m, ok, err := e.ch.Get(e.q.Events, true)
		if err != nil {
			t.Fatal(err)
		}
		back = m
		return ok
	})
	if n, _ := back.Headers[PutBacksHeader].(int32); n != 1 {
		t.Errorf("put-backs header %v, want 1", back.Headers[PutBacksHeader])
	}
	if ev, err := cloudevent.FromDelivery(back); err != nil || ev.GetId() != "e1" {
		t.Errorf("put back %v, %v; want event e1", ev, err)
	}
	if ts := e.tasks(); len(ts) != 0 {
		t.Errorf("%d tasks published for a failed fan-out", len(ts))
	}
}

// An attempt that outlasts the budget is handed over: its task is
// published and the event acked while the attempt still runs, and the
// endpoint's next deliveries get tasks at once instead of a first attempt.
func TestSlowEndpointIsHandedOver(t *testing.T) {
	d := newDeliverer(nil)
	e := newEnv(t, 1, d, 50*time.Millisecond)
	defer close(d.release) // the slow attempt ends after the test's checks
	a := newAcks()
	e.f.Handle(context.Background(), e.event("e1", a))
	if acked, _ := a.counts(); acked != 1 {
		t.Fatalf("acked %d while the slow attempt runs, want 1", acked)
	}
	ts := e.tasks()
	if len(ts) != 1 || ts[0].Message != "e1" || ts[0].Endpoint != e.eps[0] || ts[0].Attempts != 0 {
		t.Fatalf("tasks %+v, want e1's first-attempt task", ts)
	}
	if !e.f.isSlow(e.eps[0]) {
		t.Fatal("endpoint not marked slow")
	}
	calls := d.count()
	a2 := newAcks()
	e.f.Handle(context.Background(), e.event("e2", a2))
	if acked, _ := a2.counts(); acked != 1 {
		t.Fatalf("second event acked %d, want 1", acked)
	}
	if d.count() != calls {
		t.Errorf("a first attempt was made at a slow endpoint")
	}
	testenv.WaitFor(t, 10*time.Second, "e2's task", func() bool {
		for _, tk := range e.tasks() {
			if tk.Message == "e2" {
				return true
			}
		}
		return false
	})
}
