// Package fanout turns each event on hookyard.events into one delivery
// per matching endpoint of the event's tenant.
//
// With the fast path on (Fanout.First), the fan-out makes the first attempt
// of each delivery itself, through the worker's own code, and publishes a
// task only for what fails, is held back by a limit or outlasts the budget
// (see deliverFirst); otherwise each delivery is one task.
//
// The event is acked only after every delivery is recorded as delivered
// or its task is confirmed by the broker. If
// the dispatcher dies in between, the event comes back and fan-out runs
// again: endpoints whose delivery is under way (a worker took it up) are
// skipped, those still pending or retrying after the first attempt get
// their task (or first attempt) again, and a task published
// twice is caught by the delivered marker and attempt lock
// (package admit), so a crash costs at most a duplicate task, never a lost
// one.
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sync/errgroup"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/metrics"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
)

// Fanout consumes the dispatcher's events queue.
type Fanout struct {
	queues    task.Queues
	endpoints *endpoint.Store
	messages  *message.Store
	pub       task.Publisher
	metrics   *metrics.Metrics
	log       *slog.Logger
	// Concurrency is how many events are fanned out at once.
	Concurrency int
	// RetryDelay is how long an event first waits after Redis or the
	// broker failed while it was fanned out; it doubles with each try, up
	// to 30s.
	RetryDelay time.Duration
	// MaxPutBacks and MinFailingTime bound the tries of an event whose
	// fan-out keeps failing (defaults: the constants of those names).
	MaxPutBacks    int
	MinFailingTime time.Duration
	// OnEvent, if set, sees each event once it is recorded, before its
	// first attempts (package listen streams events with it).
	OnEvent func(ctx context.Context, tenant string, m *message.Message)
	// First, if set with a positive FirstAttemptBudget, makes the first
	// attempt of each delivery of a consumed event (the fast path): only
	// a delivery that fails, is held back by a limit or outlasts the
	// budget gets a task.
	First              Deliverer
	FirstAttemptBudget time.Duration

	// ShutdownGrace is how long first attempts in flight may run on once
	// Run's context ends (default 20s; the service sets the worker's):
	// then they are cut and their tasks returned as they were, like the
	// worker's attempts.
	ShutdownGrace time.Duration

	// published and firstDone are the common series of metrics.Published
	// and metrics.FirstAttempts, bound once.
	published, firstDone prometheus.Counter

	wg         sync.WaitGroup // first attempts running on after their budget
	attempters attempters
	attempts   context.Context // first attempts' context, cut ShutdownGrace after Run's ends
	slow       slowEndpoints
}

// RoutingKeyHeader carries an event's original routing key on a copy put
// back into the events queue through the default exchange, whose routing
// key is the queue's name.
const RoutingKeyHeader = "x-hookyard-routing-key"

// PutBacksHeader counts how often an event was put back after a failed
// fan-out; ReasonHeader says why an event or task was dead-lettered by the
// dispatcher itself rather than the broker.
const (
	PutBacksHeader     = "x-hookyard-put-backs"
	FailingSinceHeader = "x-hookyard-failing-since"
	ReasonHeader       = "x-hookyard-reason"
)

// An event whose fan-out keeps failing is dead-lettered, visibly, instead
// of looping for ever, once it has been tried MaxPutBacks times over at
// least MinFailingTime: an ordinary Redis failover or restart does not
// dead-letter anything.
const (
	MaxPutBacks    = 20
	MinFailingTime = 5 * time.Minute
)

// New returns a Fanout.
func New(q task.Queues, eps *endpoint.Store, msgs *message.Store, pub task.Publisher, m *metrics.Metrics, log *slog.Logger) *Fanout {
	return &Fanout{queues: q, endpoints: eps, messages: msgs, pub: pub, metrics: m, log: log, Concurrency: 64, RetryDelay: time.Second,
		MaxPutBacks: MaxPutBacks, MinFailingTime: MinFailingTime, attempters: attempters{jobs: make(chan func())},
		published: m.Published.WithLabelValues("ok"), firstDone: m.FirstAttempts.WithLabelValues("done")}
}

// Run consumes until ctx ends and returns after in-flight events finish.
func (f *Fanout) Run(ctx context.Context, conn *rabbit.Conn) error {
	grace := f.ShutdownGrace
	if grace <= 0 {
		grace = 20 * time.Second
	}
	actx, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	f.attempts = actx
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cut) })
	defer stop()
	err := conn.ConsumeWithConfig(ctx, f.queues.Events, rabbit.ConsumeConfig{
		Prefetch: f.Concurrency, Concurrency: f.Concurrency, ShutdownGrace: grace,
	}, f.Handle)
	f.waitFirstAttempts()
	return err
}

// Handle fans out one event delivery.
func (f *Fanout) Handle(ctx context.Context, d amqp.Delivery) {
	ev, m, err := Decode(d)
	if err != nil {
		f.metrics.Published.WithLabelValues("invalid").Inc()
		f.log.ErrorContext(ctx, "event is not a binary-mode CloudEvent; sent to the DLQ", "err", err, "message_id", d.MessageId)
		_ = d.Reject(false)
		return
	}
	if ev.GetTenant() == "" {
		// Nothing can be addressed without a tenant.
		f.metrics.Published.WithLabelValues("no_tenant").Inc()
		_ = d.Ack(false)
		return
	}
	if t := ev.GetTime(); t != nil {
		// A clock behind the sender's would give a negative age: no figure.
		if lag := time.Since(t.AsTime()); lag >= 0 {
			f.metrics.EventLag.Observe(lag.Seconds())
		}
	}
	key := m.RoutingKey
	n, err := f.dispatch(ctx, ev.GetTenant(), m, nil, f.First != nil && f.FirstAttemptBudget > 0, true)
	if err == nil {
		err = redisconn.Replicated(ctx, f.messages.Redis()) // the record and deliveries survive a Redis failover
	}
	if err != nil {
		f.metrics.Published.WithLabelValues("error").Inc()
		tries, since := putBacks(d)
		tries++
		if IsPermanent(err) || (tries >= f.MaxPutBacks && time.Since(since) >= f.MinFailingTime) {
			f.log.ErrorContext(ctx, "fan-out failed for good; event dead-lettered", "err", err, "event_id", ev.GetId(), "tenant", ev.GetTenant(), "tries", tries)
			f.deadLetter(ctx, d, key, fmt.Sprintf("fan-out failed (%d tries): %v", tries, err))
			return
		}
		f.log.WarnContext(ctx, "fan-out failed; event put back", "err", err, "event_id", ev.GetId(), "tenant", ev.GetTenant(), "tries", tries)
		select {
		case <-time.After(min(f.RetryDelay<<min(tries-1, 5), 30*time.Second)):
		case <-ctx.Done():
		}
		f.putBack(ctx, d, key, tries, since)
		return
	}
	f.published.Inc()
	if f.log.Enabled(ctx, slog.LevelDebug) { // the arguments allocate even when not logged
		f.log.DebugContext(ctx, "event fanned out", "event_id", ev.GetId(), "tenant", ev.GetTenant(), "tasks", n)
	}
	_ = d.Ack(false)
}

// putBack returns an event that could not be fanned out to the tail of
// the queue. A plain requeue would count against the queue's delivery
// limit (quorum queues count every return), so a Redis outage of a few
// seconds would dead-letter every event that arrived during it. A copy
// does not count; only if the copy cannot be published is the event
// requeued.
func (f *Fanout) putBack(ctx context.Context, d amqp.Delivery, key string, tries int, since time.Time) {
	msg := Copy(d, key)
	msg.Headers[PutBacksHeader] = int32(tries)
	msg.Headers[FailingSinceHeader] = since.UnixMilli()
	f.forward(ctx, d, f.queues.Events, msg)
}

// deadLetter moves an event that cannot be fanned out to the events
// queue's DLQ with the reason, where the dead-letter consumer records it
// for the API.
func (f *Fanout) deadLetter(ctx context.Context, d amqp.Delivery, key, reason string) {
	msg := Copy(d, key)
	msg.Headers[ReasonHeader] = reason
	f.forward(ctx, d, rabbit.DLQName(f.queues.Events), msg)
}

// forward publishes msg to queue and acks d once it is confirmed; if it
// cannot be published d is requeued.
func (f *Fanout) forward(ctx context.Context, d amqp.Delivery, queue string, msg amqp.Publishing) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := f.pub.Publish(pctx, "", queue, msg); err != nil {
		_ = d.Nack(false, true)
		return
	}
	_ = d.Ack(false)
}

// Copy returns a publishing of d's event with its original routing key in
// RoutingKeyHeader, for the default exchange.
func Copy(d amqp.Delivery, key string) amqp.Publishing {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[RoutingKeyHeader] = key
	return amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: amqp.Persistent, CorrelationId: d.CorrelationId, MessageId: d.MessageId,
		Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, Body: d.Body,
	}
}

// putBacks returns how often d was put back and since when its fan-out
// has been failing (now, for the first failure).
func putBacks(d amqp.Delivery) (int, time.Time) {
	n, ok := d.Headers[PutBacksHeader].(int32)
	ms, ok2 := d.Headers[FailingSinceHeader].(int64)
	if !ok || !ok2 || n < 0 {
		return 0, time.Now()
	}
	return int(n), time.UnixMilli(ms)
}

// permanentError marks a fan-out error that trying again cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that trying again cannot fix: the event is
// dead-lettered at once.
func Permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether err was marked by Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Decode reads the event of d and the message the dispatcher keeps of it.
func Decode(d amqp.Delivery) (*eventv1.Event, *message.Message, error) {
	ev, err := cloudevent.FromDelivery(d)
	if err != nil {
		return nil, nil, err
	}
	key := d.RoutingKey
	if k, ok := d.Headers[RoutingKeyHeader].(string); ok && k != "" {
		key = k
	}
	if key == "" {
		key = cloudevent.RoutingKey(ev.GetSource(), ev.GetType())
	}
	m := &message.Message{
		ID: ev.GetId(), Source: ev.GetSource(), Type: ev.GetType(), RoutingKey: key,
		ContentType: ev.GetDataContentType(), CreateTime: time.Now().UTC(), Body: ev.GetData(),
	}
	if ev.GetTime() != nil {
		m.EventTime = ev.GetTime().AsTime()
	}
	return ev, m, nil
}

// Record records m without fanning it out, under the id Dispatch would
// use (m.ID is updated), for a dead letter of an event.
func (f *Fanout) Record(ctx context.Context, tenant string, m *message.Message) error {
	_, err := f.record(ctx, tenant, m, nil)
	return err
}

// Dispatch records m with a pending delivery for each matching endpoint
// that has none, and enqueues a task for each whose delivery is not under
// way yet (or, with only set, for those endpoints). It returns
// the number of tasks published.
func (f *Fanout) Dispatch(ctx context.Context, tenant string, m *message.Message, only []string) (int, error) {
	return f.dispatch(ctx, tenant, m, only, false, false)
}

// dispatch is Dispatch; with first, the deliveries are attempted through
// the fast path (deliverFirst) and only those it hands over get a task;
// with announce, OnEvent sees the event first.
func (f *Fanout) dispatch(ctx context.Context, tenant string, m *message.Message, only []string, first, announce bool) (int, error) {
	var ids []string
	if only != nil {
		ids = only
	} else {
		recs, err := f.endpoints.Matching(ctx, tenant, m.RoutingKey)
		if err != nil {
			return 0, err
		}
		for _, r := range recs {
			ids = append(ids, r.Endpoint.GetId())
		}
	}
	// Recorded even when no endpoint matches, so that the message can be
	// looked up (and resent once an endpoint exists).
	existing, err := f.record(ctx, tenant, m, ids)
	if err != nil {
		return 0, err
	}
	if announce && f.OnEvent != nil {
		// Before the first attempts, whose outcomes the listeners also
		// see: an attempt must not reach them ahead of its event. An
		// event put back after this is seen again when it is retried.
		f.OnEvent(ctx, tenant, m)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	var todo []string
	for _, id := range ids {
		if !existing[id] {
			todo = append(todo, id)
		}
	}
	var tasks, firsts []*task.Task
	for _, id := range todo {
		t := &task.Task{
			Tenant: tenant, Message: m.ID, Endpoint: id, RoutingKey: m.RoutingKey,
			ContentType: m.ContentType, EventTime: m.EventTime, Body: m.Body,
		}
		if first && !f.isSlow(id) {
			firsts = append(firsts, t)
		} else {
			tasks = append(tasks, t)
		}
	}
	if len(tasks) == 0 {
		// Only first attempts (the usual case): no goroutine to wait on.
		n, err := f.deliverFirst(ctx, firsts)
		if err != nil {
			return 0, fmt.Errorf("publish delivery tasks: %w", err)
		}
		return n, nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	n := len(tasks)
	if len(firsts) > 0 {
		g.Go(func() error {
			published, err := f.deliverFirst(ctx, firsts)
			n += published
			return err
		})
	}
	for _, t := range tasks {
		g.Go(func() error { return f.queues.Enqueue(gctx, f.pub, t) })
	}
	if err := g.Wait(); err != nil {
		return 0, fmt.Errorf("publish delivery tasks: %w", err)
	}
	return n, nil
}

// maxRenames bounds the "<source>:" prefixes tried for one event id.
const maxRenames = 8

// record records m (see message.Store.RecordFor). An id taken by another
// event (another source's, or one sent with a different id and renamed
// to this one) makes m "<source>:<id>", then "<source>:<source>:<id>" and
// so on until an id is free or holds m itself: the same on every replay,
// and never another event's, because every stored message keeps the id
// it was sent with. A subscriber deduplicating on webhook-id keeps both.
func (f *Fanout) record(ctx context.Context, tenant string, m *message.Message, ids []string) (map[string]bool, error) {
	sent := m.ID
	if m.Orig != "" {
		sent = m.Orig
	}
	for range maxRenames {
		_, existing, err := f.messages.RecordFor(ctx, tenant, m, ids)
		if !errors.Is(err, message.ErrIDTaken) {
			return existing, err
		}
		renamed := m.Source + ":" + m.ID
		if len(renamed) > MaxMessageID {
			break
		}
		f.log.WarnContext(ctx, "event id used by another event; delivering it as source:id", "event_id", m.ID, "as", renamed, "source", m.Source, "tenant", tenant)
		m.ID, m.Orig = renamed, sent
	}
	return nil, Permanent(fmt.Errorf("event id %q of source %q: every id tried is taken by another event", sent, m.Source))
}

// MaxMessageID is the longest message id the store looks up.
const MaxMessageID = 255

// ErrNoEndpoint is returned by Resend for an endpoint without a delivery.
var ErrNoEndpoint = errors.New("message has no delivery to that endpoint")

// Forgetter clears delivered markers (admit.Gate).
type Forgetter interface {
	Forget(ctx context.Context, ep, msg string) error
}

// Requeue sends a recorded message again to the given endpoints (all of
// its endpoints when eps is empty), starting the retry schedule again;
// its attempts go on counting from the attempts made before. It
// clears dead letters, held entries and delivered markers first, so an
// explicit resend is delivered even if it was delivered before.
func (f *Fanout) Requeue(ctx context.Context, gate Forgetter, tenant, msgID string, eps []string) (int, error) {
	m, deliveries, err := f.messages.Get(ctx, tenant, msgID)
	if err != nil {
		return 0, err
	}
	fresh := 0
	if len(eps) == 0 {
		// A message whose fan-out failed (its dead letter is the
		// message's own, with no endpoint) or that no endpoint matched
		// when it came: fan it out now to the matching endpoints that have
		// no delivery yet, then send the recorded deliveries again.
		start := time.Now()
		if fresh, err = f.Dispatch(ctx, tenant, m, nil); err != nil {
			return 0, err
		}
		if err := f.messages.ClearDeadLetter(ctx, tenant, msgID, "", start); err != nil {
			return 0, err
		}
		for ep := range deliveries {
			eps = append(eps, ep)
		}
	} else {
		for _, ep := range eps {
			if _, ok := deliveries[ep]; !ok {
				return 0, ErrNoEndpoint
			}
		}
	}
	// Dead letters and held entries are cleared only once the new task is
	// confirmed: a resend that fails (broker down) leaves them listed, so
	// the caller's retry or a later recover still finds them.
	start := time.Now()
	for _, ep := range eps {
		if err := gate.Forget(ctx, ep, msgID); err != nil {
			return 0, err
		}
		// The attempt count goes on from the attempts made so far.
		before := deliveries[ep].Attempts
		if err := f.messages.SetDelivery(ctx, tenant, msgID, ep, message.Delivery{Status: message.StatusPending, Attempts: before}); err != nil {
			return 0, err
		}
		if err := f.queues.Enqueue(ctx, f.pub, &task.Task{
			Tenant: tenant, Message: msgID, Endpoint: ep, RoutingKey: m.RoutingKey, Before: before,
			ContentType: m.ContentType, EventTime: m.EventTime, Body: m.Body,
		}); err != nil {
			// Nothing was queued: show the delivery as it was.
			_ = f.messages.SetDelivery(context.WithoutCancel(ctx), tenant, msgID, ep, deliveries[ep])
			return 0, err
		}
		if err := f.messages.ClearDeadLetter(ctx, tenant, msgID, ep, start); err != nil {
			return 0, err
		}
	}
	return fresh + len(eps), nil
}
