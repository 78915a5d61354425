package deliver

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/metrics"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// retrySink answers 503 to its first request and 200 after that, and
// records the webhook-id of every request.
type retrySink struct {
	mu    sync.Mutex
	ids   []string
	codes []int
}

func (s *retrySink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	code := http.StatusOK
	if len(s.codes) == 0 {
		code = http.StatusServiceUnavailable
	}
	s.ids = append(s.ids, r.Header.Get(sign.HeaderID))
	s.codes = append(s.codes, code)
	s.mu.Unlock()
	w.WriteHeader(code)
}

// successes returns the webhook-ids the sink accepted and how many
// requests it had in all.
func (s *retrySink) successes() (ids []string, requests int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range s.codes {
		if c == http.StatusOK {
			ids = append(ids, s.ids[i])
		}
	}
	return ids, len(s.codes)
}

type retryEnv struct {
	t      *testing.T
	ctx    context.Context
	q      task.Queues
	msgs   *message.Store
	pub    *testenv.LossyPublisher
	sink   *retrySink
	ep     *dispatcherv1.Endpoint
	worker *Worker
	busy   atomic.Int32 // tasks being handled
}

// newRetryEnv runs a worker on real Redis and RabbitMQ, retrying after
// about a second, against a retrySink.
func newRetryEnv(t *testing.T) *retryEnv {
	id := testenv.ID()
	prefix := testenv.KeyPrefix(id)
	rdb := testenv.Redis(t, prefix)
	q := task.NewQueues("hookyard.test."+id, nil)
	conn := testenv.Rabbit(t, q.Declare)
	real := rabbit.NewPublisher(conn, rabbit.PublisherConfig{})
	t.Cleanup(func() { real.Close(); testenv.DeleteQueues(q.All(), q.Delays().Exchange()) })
	sink := &retrySink{}
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)

	ctx := context.Background()
	eps := endpoint.New(rdb, prefix)
	msgs := message.New(rdb, prefix, time.Hour)
	ep, err := eps.Create(ctx, settleTenant, &dispatcherv1.Endpoint{Url: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	pub := &testenv.LossyPublisher{Next: real}
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}
	w := NewWorker(Config{DefaultTimeout: 5 * time.Second, DefaultMaxInFlight: 100, BreakerFailures: 1 << 20,
		Schedule: []time.Duration{time.Second, time.Second, time.Second}},
		q, eps, msgs, admit.New(rdb, prefix, time.Hour), pub, client, metrics.New(nil), slog.New(slog.DiscardHandler))
	e := &retryEnv{t: t, ctx: ctx, q: q, msgs: msgs, pub: pub, sink: sink, ep: ep, worker: w}

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = conn.ConsumeWithConfig(rctx, q.Deliveries, rabbit.ConsumeConfig{Prefetch: 4, Concurrency: 4},
			func(ctx context.Context, d amqp.Delivery) {
				e.busy.Add(1)
				defer e.busy.Add(-1)
				w.Handle(ctx, d)
			})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// send records message id and publishes its first task copies times, as
// a fan-out replayed after a crash would.
func (e *retryEnv) send(id string, copies int) {
	e.t.Helper()
	m := &message.Message{ID: id, Source: "app", Type: "a", RoutingKey: "app.a", CreateTime: time.Now(), Body: []byte(`{}`)}
	if _, err := e.msgs.Record(e.ctx, settleTenant, m); err != nil {
		e.t.Fatal(err)
	}
	if err := e.msgs.InitDeliveries(e.ctx, settleTenant, m.ID, []string{e.ep.GetId()}); err != nil {
		e.t.Fatal(err)
	}
	tk := &task.Task{Tenant: settleTenant, Message: m.ID, Endpoint: e.ep.GetId(), RoutingKey: m.RoutingKey, Body: m.Body}
	for range copies {
		if err := e.q.Enqueue(e.ctx, e.pub.Next, tk); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *retryEnv) status(id string) message.Delivery {
	e.t.Helper()
	_, ds, err := e.msgs.Get(e.ctx, settleTenant, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return ds[e.ep.GetId()]
}

// settled waits until id is delivered and no copy of its task is left on
// the broker or in the worker, then checks that the sink accepted it
// exactly once, under id, after wantRequests requests in all.
func (e *retryEnv) settled(id string, wantRequests int) {
	e.t.Helper()
	testenv.WaitFor(e.t, 30*time.Second, "delivery of "+id, func() bool {
		return e.status(id).Status == message.StatusDelivered
	})
	testenv.WaitFor(e.t, 30*time.Second, "every copy of the task consumed", func() bool {
		return e.ready() == 0 && e.busy.Load() == 0
	})
	ok, requests := e.sink.successes()
	if len(ok) != 1 || ok[0] != id || requests != wantRequests {
		e.t.Fatalf("sink accepted %q after %d requests; want [%s] once after %d", ok, requests, id, wantRequests)
	}
	if d := e.status(id); d.Attempts != wantRequests {
		e.t.Fatalf("delivery %+v, want %d attempts", d, wantRequests)
	}
}

// ready counts the task copies waiting in the deliveries queue, its DLQ
// and the delay queues.
func (e *retryEnv) ready() int {
	e.t.Helper()
	conn, err := amqp.Dial(testenv.AMQPURL())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	n := 0
	for _, name := range append([]string{e.q.Deliveries, rabbit.DLQName(e.q.Deliveries)}, e.q.Delays().Queues()...) {
		ch, err := conn.Channel()
		if err != nil {
			e.t.Fatal(err)
		}
		st, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		_ = ch.Close()
		if err != nil {
			e.t.Fatalf("inspect %s: %v", name, err)
		}
		n += st.Messages
	}
	return n
}

// A failed attempt is settled as "retrying" in Redis, then its retry task
// is published. If the broker is lost in between (the retry publish and
// the put-back both fail), the original task comes back from the broker;
// it must produce the retry it owes, not be dropped as a stale copy and
// leave the delivery "retrying" forever.
func TestRetryLostAfterSettleIsRepublished(t *testing.T) {
	e := newRetryEnv(t)
	e.pub.Fail.Store(2) // the retry publish, then the put-back of the task
	e.send("lost-retry", 1)
	e.settled("lost-retry", 2)
}

// Two copies of a task (a fan-out replayed, or a copy redelivered after
// its retry was published) lead to one attempt each time: one retry
// chain, one success.
func TestCopiesOfATaskMakeOneRetryChain(t *testing.T) {
	e := newRetryEnv(t)
	e.send("two-copies", 2)
	e.settled("two-copies", 2)
}

// recordingPublisher passes publishes on and keeps the tasks among them.
type recordingPublisher struct {
	next  task.Publisher
	mu    sync.Mutex
	tasks []amqp.Publishing
}

func (p *recordingPublisher) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	if err := p.next.Publish(ctx, exchange, key, msg); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := msg.Headers[task.HeaderAttempt]; ok {
		p.tasks = append(p.tasks, msg)
	}
	return nil
}

// task decodes the i-th task published, as it arrives when due.
func (p *recordingPublisher) task(t *testing.T, i int) *task.Task {
	t.Helper()
	p.mu.Lock()
	msg := p.tasks[i]
	p.mu.Unlock()
	tk, err := task.Decode(amqp.Delivery{Headers: msg.Headers, ContentType: msg.ContentType, MessageId: msg.MessageId, Body: msg.Body})
	if err != nil {
		t.Fatal(err)
	}
	tk.NotBefore = time.Time{}
	return tk
}

func (p *recordingPublisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tasks)
}

// Only the copy that made an attempt publishes its retry again; another
// copy of the retry task, once the retry's attempt is made, is dropped,
// so one duplicate does not follow the delivery down its whole schedule.
func TestOnlyTheAttemptingCopyRepublishesItsRetry(t *testing.T) {
	e := newSettleEnv(t, http.StatusServiceUnavailable)
	e.worker.cfg.Schedule = []time.Duration{time.Hour, time.Hour, time.Hour}
	rec := &recordingPublisher{next: e.worker.pub}
	e.worker.pub = rec

	id, _ := e.handle(0) // attempt 1 fails: its retry is task 0
	if rec.count() != 1 {
		t.Fatalf("%d tasks published after a failed attempt, want its retry", rec.count())
	}
	// The original comes back (its retry's confirm lost, as far as the
	// worker knows): it publishes the retry again, task 1.
	orig := &task.Task{Tenant: settleTenant, Message: id, Endpoint: e.ep.GetId(), RoutingKey: "app.a", Body: []byte(`{}`)}
	if err := e.worker.Deliver(e.ctx, orig); err != nil || rec.count() != 2 {
		t.Fatalf("redelivered original: %v, %d tasks published; want the retry again", err, rec.count())
	}
	first, second := rec.task(t, 0), rec.task(t, 1)
	if first.Copy == second.Copy || first.Attempts != 1 || second.Attempts != 1 {
		t.Fatalf("retry copies %+v and %+v: want attempt 1, told apart", first, second)
	}
	// The first copy makes attempt 2, which fails: its retry is task 2.
	if err := e.worker.Deliver(e.ctx, first); err != nil || rec.count() != 3 {
		t.Fatalf("retry: %v, %d tasks published; want its own retry", err, rec.count())
	}
	// The second copy is a duplicate: dropped, nothing published.
	if err := e.worker.Deliver(e.ctx, rec.task(t, 1)); err != nil || rec.count() != 3 {
		t.Fatalf("duplicate retry: %v, %d tasks published; want it dropped", err, rec.count())
	}
	// The first copy, back again, owes the retry of attempt 2.
	if err := e.worker.Deliver(e.ctx, rec.task(t, 0)); err != nil || rec.count() != 4 {
		t.Fatalf("attempting copy redelivered: %v, %d tasks published; want its retry again", err, rec.count())
	}
	if again := rec.task(t, 3); again.Attempts != 2 {
		t.Fatalf("republished retry %+v, want attempt 2", again)
	}
	if n, d := e.state(id); n != 2 || d.Status != message.StatusRetrying || d.Attempts != 2 {
		t.Fatalf("%d attempts logged, delivery %+v; want 2, retrying", n, d)
	}
}
