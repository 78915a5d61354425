// Package deliver is the delivery worker: it consumes delivery tasks
// (package task), turns each into a signed HTTP request, records the
// outcome and schedules what comes next.
package deliver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/delay"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/metrics"
	"github.com/hookyard/hookyard/services/dispatcher/internal/retry"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
)

// Limits on what a subscriber can make the dispatcher read and keep.
const (
	MaxResponseRead = 64 << 10
	jitter          = 0.2
	// deferDelay is how long a task that could not start (endpoint at its
	// in-flight limit, another copy running) first waits before it is
	// tried again; the consumer slot is freed at once instead. The wait
	// doubles with each deferral up to maxDeferDelay, so the backlog of a
	// saturated endpoint costs the shared queue a bounded number of hops
	// per second instead of one per task per second.
	deferDelay    = time.Second
	maxDeferDelay = 30 * time.Second
	// infraRetry is how long a task waits after Redis or the broker failed
	// while it was handled.
	infraRetry = 5 * time.Second
)

// maxRetryAfter bounds how far a subscriber's Retry-After can push a retry
// beyond the schedule: it may slow the dispatcher down, but not park a
// message for days. It never brings a retry forward.
const maxRetryAfter = 6 * time.Hour

// OpEventSource and OpEventType name the operational event published when
// an endpoint is disabled: routing key hookyard.endpoint.disabled.
const (
	OpEventSource = publish.OperationalSource
	OpEventType   = "endpoint.disabled"
)

// Config tunes a Worker.
type Config struct {
	Schedule           []time.Duration // default retry schedule
	DefaultTimeout     time.Duration
	DefaultMaxInFlight int
	AutoDisableAfter   time.Duration
	BreakerFailures    uint32 // consecutive failures that open the breaker
	BreakerTimeout     time.Duration
	Concurrency        int // deliveries handled at once by this replica
	// ShutdownGrace is how long attempts in flight may run on once the
	// worker is stopped (default: the longest endpoint timeout and 5s).
	// An attempt still running then is cut and its task returned as it
	// was, without counting the attempt.
	ShutdownGrace time.Duration
}

// Worker consumes the deliveries queue.
type Worker struct {
	cfg       Config
	queues    task.Queues
	endpoints *endpoint.Store
	messages  *message.Store
	gate      *admit.Gate
	pub       task.Publisher
	// rt sends the attempts: the SSRF-safe client's transport, without
	// the client's redirect handling (no redirect is followed anyway),
	// whose copies of each request and its headers and whose timer cost
	// more than the rest of an attempt's own work.
	rt      http.RoundTripper
	metrics *metrics.Metrics
	log     *slog.Logger
	// delivered is metrics.Deliveries of the common outcome, bound once.
	delivered prometheus.Counter

	mu       sync.Mutex
	breakers map[string]*breaker
	// replica names this worker's breakers in their shared copy.
	replica string
}

type breaker struct {
	cb        *gobreaker.TwoStepCircuitBreaker[struct{}]
	inFlight  prometheus.Gauge // the endpoint's metrics.InFlight, bound once
	mu        sync.Mutex
	openUntil time.Time
	// state and version are what reportBreaker copies to Redis; reporting
	// is set while a goroutine does so.
	state     string
	version   uint64
	reporting bool
}

// NewWorker returns a Worker; client must be the SSRF-safe client. Its
// transport sends the attempts: a redirect is never followed, and each
// attempt is bounded by its endpoint's timeout.
func NewWorker(cfg Config, q task.Queues, eps *endpoint.Store, msgs *message.Store, gate *admit.Gate, pub task.Publisher, client *http.Client, m *metrics.Metrics, log *slog.Logger) *Worker {
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = 5
	}
	if cfg.BreakerTimeout <= 0 {
		cfg.BreakerTimeout = 30 * time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = endpoint.MaxTimeout + 5*time.Second
	}
	rt := client.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &Worker{cfg: cfg, queues: q, endpoints: eps, messages: msgs, gate: gate, pub: pub,
		rt: rt, metrics: m, delivered: m.Deliveries.WithLabelValues(retry.Delivered.String()), log: log, breakers: map[string]*breaker{}, replica: replicaName()}
}

// Run consumes until ctx ends, then finishes the attempts in flight (each
// bounded by its endpoint timeout) and returns.
func (w *Worker) Run(ctx context.Context, conn *rabbit.Conn) error {
	err := conn.ConsumeWithConfig(ctx, w.queues.Deliveries, rabbit.ConsumeConfig{
		Prefetch:      w.cfg.Concurrency,
		Concurrency:   w.cfg.Concurrency,
		ShutdownGrace: w.cfg.ShutdownGrace,
	}, w.Handle)
	w.forgetBreakers()
	return err
}

// forgetBreakers removes this replica's breakers from their shared copy
// when it stops, so that the API does not show them until they expire.
func (w *Worker) forgetBreakers() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, b := range w.breakers {
		b.mu.Lock()
		open := b.state != "" && b.state != admit.BreakerClosed
		b.mu.Unlock()
		if !open {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := w.gate.ReportBreaker(ctx, id, w.replica, admit.BreakerClosed, time.Time{}); err != nil {
			w.log.Warn("removing a circuit breaker's shared state failed", "endpoint_id", id, "err", err)
		}
		cancel()
	}
}

// ShutdownGrace is how long Run lets attempts in flight finish once its
// context ends.
func (w *Worker) ShutdownGrace() time.Duration { return w.cfg.ShutdownGrace }

// Handle processes one task delivery and acks, rejects or requeues it.
func (w *Worker) Handle(ctx context.Context, d amqp.Delivery) {
	t, err := task.Decode(d)
	if err != nil {
		w.log.ErrorContext(ctx, "dropping malformed task to the DLQ", "err", err, "message_id", d.MessageId)
		_ = d.Reject(false)
		return
	}
	err = w.Deliver(ctx, t)
	if err == nil {
		err = redisconn.Replicated(ctx, w.messages.Redis()) // the outcome survives a Redis failover
	}
	if err != nil {
		time.Sleep(time.Second)
		_ = d.Nack(false, true)
		return
	}
	_ = d.Ack(false)
}

// Deliver handles t as the worker handles a task taken from the queue:
// admission, the attempt and its bookkeeping, or a deferral or hold. It is
// also the fan-out's fast path (package fanout), which makes the first
// attempt of a delivery without publishing its task, so the two share one
// admission (lock, in-flight lease, rate limit, delivered marker).
//
// A nil error means t's delivery is recorded as delivered, or held, or
// has its durable task on the broker (a retry, a deferral, or t itself put
// back after Redis or the broker failed). An error means none of that
// could be written and t is still owed by the caller.
func (w *Worker) Deliver(ctx context.Context, t *task.Task) error {
	err := w.process(ctx, t)
	if err == nil {
		return nil
	}
	w.log.WarnContext(ctx, "delivery task failed; retrying later", "err", err, "message_id", t.Message, "endpoint_id", t.Endpoint)
	// Prefer a durable delayed retry over a hot requeue loop, and
	// never bring forward a retry that was already scheduled later.
	if next := time.Now().Add(infraRetry); t.NotBefore.Before(next) {
		t.NotBefore = next
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if perr := w.enqueue(pctx, t); perr != nil {
		return fmt.Errorf("%w; putting the task back: %w", err, perr)
	}
	return nil
}

// enqueue publishes t as a new copy of its task (task.Task.Copy).
func (w *Worker) enqueue(ctx context.Context, t *task.Task) error {
	t.Copy = uuid.NewString()
	return w.queues.Enqueue(ctx, w.pub, t)
}

// deferTask puts t back without counting an attempt.
func (w *Worker) deferTask(ctx context.Context, t *task.Task, wait time.Duration, reason string) error {
	w.metrics.Deferrals.WithLabelValues(reason).Inc()
	t.Deferrals++
	t.NotBefore = time.Now().Add(wait)
	return w.enqueue(ctx, t)
}

// DeferBackoff is how long a task deferred n times before (endpoint full or
// the task busy) waits now: deferDelay doubled n times, at most
// maxDeferDelay.
func DeferBackoff(n int) time.Duration {
	d := deferDelay
	for range min(max(n, 0), 10) {
		if d *= 2; d >= maxDeferDelay {
			return maxDeferDelay
		}
	}
	return d
}

// process handles t; a nil error means t can be acked.
func (w *Worker) process(ctx context.Context, t *task.Task) error {
	if !t.NotBefore.IsZero() && time.Until(t.NotBefore) >= delay.Tolerance {
		// Back from a delay queue shorter than its wait: another rung.
		w.metrics.Deferrals.WithLabelValues("early").Inc()
		return w.enqueue(ctx, t)
	}
	if t.Delivered {
		return w.recordDelivered(ctx, t)
	}
	rec, err := w.endpoints.Cached(ctx, t.Tenant, t.Endpoint)
	if errors.Is(err, endpoint.ErrNotFound) || (err == nil && rec.Endpoint.GetDisabled()) {
		// The cache may lag by up to a second: confirm with the store
		// before dropping or holding, so a fresh create or recover is
		// never missed.
		rec, err = w.endpoints.Get(ctx, t.Tenant, t.Endpoint)
	}
	if errors.Is(err, endpoint.ErrNotFound) {
		w.metrics.Deliveries.WithLabelValues("dropped").Inc()
		return nil
	}
	if err != nil {
		return err
	}
	ep := rec.Endpoint
	if ep.GetDisabled() {
		// A disabling whose event did not go out (publish failed, or a
		// crash) is announced now.
		if err := w.announce(ctx, rec); err != nil {
			return err
		}
		return w.hold(ctx, t)
	}

	b := w.breaker(ep.GetId())
	if until := b.until(); time.Until(until) > 0 {
		return w.deferTask(ctx, t, max(time.Until(until), DeferBackoff(t.Deferrals)), "breaker")
	}

	timeout := endpoint.EffectiveTimeout(ep, w.cfg.DefaultTimeout)
	req := admit.Request{
		Endpoint:    ep.GetId(),
		Message:     t.Message,
		Token:       uuid.NewString(),
		Lease:       timeout + 5*time.Second,
		MaxInFlight: endpoint.EffectiveMaxInFlight(ep, w.cfg.DefaultMaxInFlight),
		Rate:        int(ep.GetRateLimit()),
		Attempts:    t.Attempts,
	}
	verdict, wait, err := w.gate.Admit(ctx, &req)
	if err != nil {
		return err
	}
	switch verdict {
	case admit.Done:
		// Delivered before. Its state may not have been written (Redis
		// failed after the marker was set), so make sure of it rather than
		// leave the delivery pending forever.
		return w.messages.MarkDelivered(ctx, t.Tenant, t.Message, t.Endpoint, t.Total())
	case admit.Stale:
		return w.resumeRetry(ctx, t)
	case admit.Busy:
		return w.deferTask(ctx, t, DeferBackoff(t.Deferrals), "busy")
	case admit.Full:
		return w.deferTask(ctx, t, DeferBackoff(t.Deferrals), "in_flight")
	case admit.Limited:
		// wait is the time of the token reserved for this task.
		return w.deferTask(ctx, t, max(wait, delay.Tolerance), "rate_limit")
	}
	done, err := b.cb.Allow()
	if err != nil {
		// Half-open and already probing: give the slot and the token
		// back, and wait like a task of a full endpoint.
		if err := w.gate.Cancel(context.WithoutCancel(ctx), req); err != nil {
			w.log.WarnContext(ctx, "releasing a refused attempt failed", "err", err, "endpoint_id", ep.GetId())
		}
		return w.deferTask(ctx, t, DeferBackoff(t.Deferrals), "breaker")
	}

	res := w.attempt(ctx, b, rec, t, timeout)
	if res.err != nil && ctx.Err() != nil {
		// Cut by shutdown, not failed by the subscriber: the task goes
		// back as it was (Handle re-enqueues it), the attempt uncounted
		// and its slot and token given back.
		if err := w.gate.Cancel(context.WithoutCancel(ctx), req); err != nil {
			w.log.WarnContext(ctx, "releasing a cut attempt failed", "err", err, "endpoint_id", ep.GetId())
		}
		done(nil)
		return fmt.Errorf("attempt cut by shutdown: %w", ctx.Err())
	}
	outcome := retry.Classify(res.status, res.err, ep.GetRetryClientErrors())
	if outcome == retry.Delivered || outcome == retry.Permanent {
		done(nil) // the subscriber is up and answering
	} else {
		done(errors.New(outcome.String()))
	}
	// Bookkeeping must complete even while shutting down.
	return w.settle(context.WithoutCancel(ctx), rec, t, req, outcome, res)
}

// settle records the outcome of an attempt and acts on it. The attempt,
// the release of its admission, the delivery state it leads to and any
// dead letter or hold are written in one round trip (message.Store.Settle).
func (w *Worker) settle(ctx context.Context, rec *endpoint.Record, t *task.Task, req admit.Request, outcome retry.Outcome, res result) error {
	ep := rec.Endpoint
	now := time.Now()
	// With the task's context, so the line carries the trace id of the
	// webhook that caused the delivery. Checked first: the arguments
	// allocate on every attempt even when debug logs are off.
	if w.log.Enabled(ctx, slog.LevelDebug) {
		w.log.DebugContext(ctx, "delivery attempt", "tenant", t.Tenant, "message_id", t.Message, "endpoint_id", t.Endpoint,
			"attempt", res.record.GetNumber(), "status_code", res.status, "outcome", outcome.String())
	}
	t.Deferrals = 0
	t.Attempts++
	delivered := outcome == retry.Delivered
	o := message.Outcome{Attempt: res.record, At: now}
	ops := []message.Op{func(ctx context.Context, pipe redis.Pipeliner) { w.gate.QueueFinish(ctx, pipe, req, delivered) }}
	var failingSince func() time.Time
	switch outcome {
	case retry.Delivered:
		o.State = message.Delivery{Status: message.StatusDelivered, Attempts: t.Total()}
		ops = append(ops, func(ctx context.Context, pipe redis.Pipeliner) {
			w.endpoints.QueueClearFailing(ctx, pipe, t.Tenant, t.Endpoint)
		})
	case retry.Gone:
		if rec.Callback {
			// Nobody can see or recover a callback endpoint: its 410 is a
			// dead letter, resendable, and other callbacks still go.
			o.State = message.Delivery{Status: message.StatusFailed, Attempts: t.Total()}
			o.DeadLetter = "permanent failure: " + res.record.GetError()
			break
		}
		// Disabled first: if that fails, nothing of the attempt is
		// written and the task is tried again.
		if err := w.disable(ctx, t.Tenant, ep.GetId(), endpoint.ReasonGone); err != nil {
			return err
		}
		o.State, o.Held = message.Delivery{Status: message.StatusHeld, Attempts: t.Total()}, true
	case retry.Permanent:
		o.State = message.Delivery{Status: message.StatusFailed, Attempts: t.Total()}
		o.DeadLetter = "permanent failure: " + res.record.GetError()
	default: // Retry or Blocked
		ops = append(ops, func(ctx context.Context, pipe redis.Pipeliner) {
			failingSince = w.endpoints.QueueMarkFailing(ctx, pipe, t.Tenant, ep.GetId(), now)
		})
		delay, ok := retry.Delay(endpoint.Schedule(ep, w.cfg.Schedule), t.Attempts, jitter, nil)
		if !ok {
			o.State = message.Delivery{Status: message.StatusFailed, Attempts: t.Total()}
			o.DeadLetter = fmt.Sprintf("retries exhausted after %d attempts", t.Attempts)
			break
		}
		if res.status == http.StatusTooManyRequests || res.status == http.StatusServiceUnavailable {
			delay = retry.Lengthen(delay, res.header, now, maxRetryAfter)
		}
		t.NotBefore = now.Add(delay)
		o.State = message.Delivery{Status: message.StatusRetrying, Attempts: t.Total(), Next: t.NotBefore, Copy: t.Copy}
	}
	write := func() error { return w.messages.Settle(ctx, t.Tenant, t.Message, t.Endpoint, o, ops...) }
	if err := write(); err != nil {
		if !delivered {
			return fmt.Errorf("finish attempt: %w", err)
		}
		// The subscriber has the message: write that down, retrying the
		// write rather than the delivery. If Redis stays away, the task
		// goes back marked delivered and only records it later.
		if err := w.retryWrite(ctx, write); err != nil {
			t.Delivered = true
			return fmt.Errorf("record delivery: %w", err)
		}
	}
	if delivered {
		w.delivered.Inc()
	} else {
		w.metrics.Deliveries.WithLabelValues(outcome.String()).Inc()
	}
	if o.DeadLetter != "" {
		w.metrics.DeadLetter.Inc()
		w.metrics.Deliveries.WithLabelValues("dead_letter").Inc()
	}
	if failingSince != nil && !rec.Callback && w.cfg.AutoDisableAfter > 0 && now.Sub(failingSince()) >= w.cfg.AutoDisableAfter {
		if err := w.disable(ctx, t.Tenant, ep.GetId(), endpoint.ReasonFailing); err != nil {
			return err
		}
	}
	switch {
	case o.Held:
		return w.recheckHold(ctx, t)
	case o.State.Status == message.StatusRetrying:
		if err := w.enqueue(ctx, t); err != nil {
			return err
		}
		w.metrics.Retries.Inc()
	}
	return nil
}

// resumeRetry handles a copy of t whose attempt was made already. Usually
// it is a second copy (a fan-out replayed after a crash) and the first
// carries the delivery on. But an attempt that failed is settled in Redis
// before its retry task is published: if the worker dies, or loses the
// broker, between the two, the retry exists only as the "retrying" state,
// and the copy coming back is t itself, redelivered. So the copy that
// made the last attempt (the state names it: task.Task.Copy), when that
// attempt was settled as a retry, publishes that retry again, due when
// the state says. Should the retry have reached the broker after all, the
// two copies of it are one more duplicate: the attempt lock and attempt
// count let one of them make the attempt, and the other, not being the
// copy named by the state, is dropped. Another copy of t is dropped, and
// a dead letter, hold or delivery settled for the attempt leaves nothing
// to do. Copies published by the fan-out or the API all have the same
// (empty) name: each of them stands for the first attempt.
func (w *Worker) resumeRetry(ctx context.Context, t *task.Task) error {
	d, err := w.messages.Delivery(ctx, t.Tenant, t.Message, t.Endpoint)
	if errors.Is(err, message.ErrNotFound) {
		w.metrics.Deliveries.WithLabelValues("duplicate").Inc()
		return nil
	}
	if err != nil {
		return err
	}
	if d.Status != message.StatusRetrying || d.Attempts != t.Total()+1 || d.Copy != t.Copy {
		w.metrics.Deliveries.WithLabelValues("duplicate").Inc()
		return nil
	}
	t.Attempts++
	t.Deferrals = 0
	t.NotBefore = d.Next
	if err := w.enqueue(ctx, t); err != nil {
		return err
	}
	w.log.Info("published a retry that an attempt settled but may not have published", "message_id", t.Message, "endpoint_id", t.Endpoint, "attempts", d.Attempts)
	w.metrics.Retries.Inc()
	return nil
}

// writeRetryFor bounds retryWrite: longer than a Redis outage of 30 s,
// and shorter than the attempt lock outlives the attempt
// (admit.DefaultLockOutlives), so that no other copy of the task can start an
// attempt before the success is written down.
const writeRetryFor = 35 * time.Second

// retryWrite retries write with a growing pause, at most a second (so the
// write lands soon after Redis is back), for up to writeRetryFor; the task
// stays unacked meanwhile.
func (w *Worker) retryWrite(ctx context.Context, write func() error) error {
	deadline := time.Now().Add(writeRetryFor)
	pause := 100 * time.Millisecond
	var err error
	for time.Now().Before(deadline) {
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(2*pause, time.Second)
		if err = write(); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return err
}

// recordDelivered writes down a delivery that succeeded but could not be
// recorded then.
func (w *Worker) recordDelivered(ctx context.Context, t *task.Task) error {
	if err := w.gate.MarkDelivered(ctx, t.Endpoint, t.Message); err != nil {
		return err
	}
	if err := w.messages.MarkDelivered(ctx, t.Tenant, t.Message, t.Endpoint, t.Total()); err != nil {
		return err
	}
	if err := w.endpoints.ClearFailing(ctx, t.Tenant, t.Endpoint); err != nil {
		return err
	}
	w.metrics.Deliveries.WithLabelValues("delivered").Inc()
	return nil
}

// hold parks t, for which no attempt was made, until its endpoint is
// re-enabled.
func (w *Worker) hold(ctx context.Context, t *task.Task) error {
	o := message.Outcome{State: message.Delivery{Status: message.StatusHeld, Attempts: t.Total()}, Held: true, At: time.Now()}
	if err := w.messages.Settle(ctx, t.Tenant, t.Message, t.Endpoint, o); err != nil {
		return err
	}
	return w.recheckHold(ctx, t)
}

// recheckHold follows a hold. The endpoint may have been re-enabled since
// it was read, and whoever re-enabled it may have listed the held set
// before t was added: so the endpoint is read again after t is held, and
// if it is enabled by then t is taken back out and sent now (unless the
// re-enabling took it first).
func (w *Worker) recheckHold(ctx context.Context, t *task.Task) error {
	rec, err := w.endpoints.Get(ctx, t.Tenant, t.Endpoint)
	if errors.Is(err, endpoint.ErrNotFound) || (err == nil && rec.Endpoint.GetDisabled()) {
		w.metrics.Deliveries.WithLabelValues("held").Inc()
		return nil
	}
	if err != nil {
		return err
	}
	mine, err := w.messages.Unhold(ctx, t.Tenant, t.Message, t.Endpoint, message.Delivery{Status: message.StatusPending, Attempts: t.Total()})
	if err != nil || !mine {
		return err
	}
	t.NotBefore = time.Time{}
	return w.enqueue(ctx, t)
}

// disable disables the endpoint and publishes hookyard.endpoint.disabled.
func (w *Worker) disable(ctx context.Context, tenant, id, reason string) error {
	rec, changed, err := w.endpoints.Disable(ctx, tenant, id, reason)
	if err != nil {
		return err
	}
	if changed {
		w.metrics.Disabled.WithLabelValues(reason).Inc()
		w.log.WarnContext(ctx, "endpoint disabled", "tenant", tenant, "endpoint_id", id, "reason", reason)
	}
	return w.announce(ctx, rec)
}

// announce publishes the disabled event the record still owes, if any,
// then clears the notice. A crash in between publishes it twice, never
// not at all.
func (w *Worker) announce(ctx context.Context, rec *endpoint.Record) error {
	if rec.Notice == "" {
		return nil
	}
	since := time.Now()
	if fs := rec.Endpoint.GetFailingSince(); fs != nil && rec.Notice == endpoint.ReasonFailing {
		since = fs.AsTime()
	}
	id := rec.Endpoint.GetId()
	if err := PublishDisabled(ctx, w.pub, rec.Tenant, id, rec.Notice, since); err != nil {
		return err
	}
	return w.endpoints.ClearNotice(ctx, rec.Tenant, id, rec.Notice)
}

// PublishDisabled publishes the operational event for a disabled endpoint.
func PublishDisabled(ctx context.Context, pub task.Publisher, tenant, id, reason string, since time.Time) error {
	data, err := protojson.Marshal(&dispatcherv1.EndpointDisabled{EndpointId: id, Reason: reason, FailingSince: timestamppb.New(since)})
	if err != nil {
		return fmt.Errorf("encode endpoint.disabled: %w", err)
	}
	evID, err := uuid.NewV7()
	if err != nil {
		return err
	}
	// The shared encoding and rules (platform/publish); the id is fresh,
	// so there is nothing to dedupe.
	key, msg, err := publish.Encode(publish.Event{
		Tenant: tenant, Source: OpEventSource, ID: evID.String(), Type: OpEventType,
		Time: time.Now(), ContentType: "application/json", Body: data,
	})
	if err != nil {
		return err
	}
	if err := pub.Publish(ctx, rabbit.EventsExchange, key, msg); err != nil {
		return fmt.Errorf("publish endpoint.disabled: %w", err)
	}
	return nil
}

type result struct {
	status int
	header http.Header
	err    error
	record *dispatcherv1.Attempt
}

// attempt sends one signed request.
func (w *Worker) attempt(ctx context.Context, b *breaker, rec *endpoint.Record, t *task.Task, timeout time.Duration) result {
	ep := rec.Endpoint
	b.inFlight.Inc()
	defer b.inFlight.Dec()

	start := time.Now()
	att := &dispatcherv1.Attempt{EndpointId: ep.GetId(), Number: int32(t.Total() + 1), Time: timestamppb.New(start)}
	res := result{record: att}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, ep.GetUrl(), bytes.NewReader(t.Body))
	if err != nil {
		res.err = err
	} else {
		for k, v := range ep.GetHeaders() {
			req.Header.Set(k, v)
		}
		ct := t.ContentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
		req.Header.Set("User-Agent", "Hookyard-Dispatcher/1")
		sign.HeadersWith(req.Header, rec.SigningKeys(start), t.Message, start, t.Body)
		trace.InjectHTTP(rctx, req.Header)
		resp, err := w.rt.RoundTrip(req)
		att.Latency = durationpb.New(time.Since(start))
		if err != nil {
			// As http.Client.Do reports it.
			res.err = &url.Error{Op: "Post", URL: errorURL(req.URL), Err: err}
		} else {
			snippet, rerr := readResponse(resp.Body)
			_ = resp.Body.Close()
			res.status, res.header = resp.StatusCode, resp.Header
			att.StatusCode = int32(resp.StatusCode)
			att.ResponseSnippet = snippet
			if rerr != nil && resp.StatusCode/100 != 2 {
				att.Error = "reading response: " + rerr.Error()
			}
		}
	}
	if att.Latency == nil {
		att.Latency = durationpb.New(time.Since(start))
	}
	w.metrics.Latency.Observe(att.Latency.AsDuration().Seconds())
	att.ErrorClass = string(retry.ErrorClass(res.status, res.err))
	if res.err != nil {
		att.Error = res.err.Error()
	} else if res.status/100 != 2 {
		att.Error = "HTTP " + strconv.Itoa(res.status)
	}
	return res
}

// snippetBufs hold the start of responses being read.
var snippetBufs = sync.Pool{New: func() any { return new([message.MaxSnippet]byte) }}

// readResponse returns the first message.MaxSnippet bytes of body and reads
// on to MaxResponseRead, so that the connection can be reused; only the
// snippet is kept (reading it all into memory allocated a buffer per
// attempt, up to MaxResponseRead).
func readResponse(body io.Reader) (string, error) {
	buf := snippetBufs.Get().(*[message.MaxSnippet]byte)
	defer snippetBufs.Put(buf)
	n, err := io.ReadFull(body, buf[:])
	snippet := string(buf[:n])
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return snippet, nil
	case err != nil:
		return snippet, err
	}
	if _, err := io.CopyN(io.Discard, body, MaxResponseRead-int64(n)); err != nil && !errors.Is(err, io.EOF) {
		return snippet, err
	}
	return snippet, nil
}

// errorURL is u as http.Client puts it in its errors: a password shown
// as "***".
func errorURL(u *url.URL) string {
	if _, ok := u.User.Password(); ok {
		c := *u
		c.User = url.UserPassword(u.User.Username(), "***")
		return c.String()
	}
	return u.String()
}

func (w *Worker) breaker(id string) *breaker {
	w.mu.Lock()
	defer w.mu.Unlock()
	if b, ok := w.breakers[id]; ok {
		return b
	}
	b := &breaker{inFlight: w.metrics.InFlight.WithLabelValues(id)}
	gauge := w.metrics.Breaker.WithLabelValues(id)
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        id,
		MaxRequests: 1,
		Timeout:     w.cfg.BreakerTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= w.cfg.BreakerFailures },
		OnStateChange: func(_ string, _, to gobreaker.State) {
			b.mu.Lock()
			if to == gobreaker.StateOpen {
				b.openUntil = time.Now().Add(w.cfg.BreakerTimeout)
			} else {
				b.openUntil = time.Time{}
			}
			b.state = map[gobreaker.State]string{gobreaker.StateClosed: admit.BreakerClosed, gobreaker.StateHalfOpen: admit.BreakerHalfOpen, gobreaker.StateOpen: admit.BreakerOpen}[to]
			b.version++
			// gobreaker holds its lock while it calls this: the copy to
			// Redis is written by a goroutine, one per breaker at a time.
			if !b.reporting {
				b.reporting = true
				go w.reportBreaker(id, b)
			}
			b.mu.Unlock()
			gauge.Set(map[gobreaker.State]float64{gobreaker.StateClosed: 0, gobreaker.StateHalfOpen: 1, gobreaker.StateOpen: 2}[to])
		},
	})
	w.breakers[id] = b
	return b
}

// reportBreaker copies b's state to Redis for the API until the copy is
// current. It gives up after a few failures: the next change reports again,
// and a stale copy expires (admit.BreakerTTL).
func (w *Worker) reportBreaker(id string, b *breaker) {
	for failures := 0; ; {
		b.mu.Lock()
		state, until, v := b.state, b.openUntil, b.version
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := w.gate.ReportBreaker(ctx, id, w.replica, state, until)
		cancel()
		if err != nil {
			if failures++; failures < 3 {
				time.Sleep(time.Second)
				continue
			}
			w.log.Warn("reporting a circuit breaker's state failed", "endpoint_id", id, "state", state, "err", err)
		}
		b.mu.Lock()
		if err != nil || b.version == v {
			b.reporting = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
	}
}

// replicaName names this process among the dispatcher replicas: the host
// name (a pod's name) and a random suffix, as a restarted process keeps
// none of its breakers.
func replicaName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "replica"
	}
	return host + "-" + uuid.NewString()[:8]
}

// until returns when an open breaker half-opens (zero when not open).
func (b *breaker) until() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openUntil
}
