// Package worker runs Hookyard jobs tasks in a Go program. Register a
// handler per task name, then Run: the worker leases tasks from the jobs
// service over gRPC, runs up to Slots of them at once, heartbeats while
// they run and reports each outcome with the lease's fencing token.
//
// Time limits: a handler's context ends at the task's soft time limit (or
// when the task is cancelled), so it can clean up. The hard limit is the
// service's: at the hard deadline the service fails the attempt, retries
// the task elsewhere and refuses this worker's late outcome. A handler that
// ignores its context keeps its slot until it returns (so a task never runs
// twice at once in one worker), counts in Stuck, and is reported to
// Config.OnStuck, where a program run under a supervisor may exit so the
// supervisor replaces the process, as Celery's prefork pool replaces a
// child.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/coalesce"
	"github.com/hookyard/hookyard/platform/trace"
)

// Task is a leased task as a handler sees it.
type Task struct {
	ID, Name, Queue string
	// Args is the task's JSON arguments.
	Args json.RawMessage
	// Attempt is 1 for the first run.
	Attempt int
	// HardDeadline is when the service ends the attempt regardless.
	HardDeadline time.Time
}

// Bind decodes the arguments into v.
func (t *Task) Bind(v any) error {
	if len(t.Args) == 0 {
		return Permanent(errors.New("task has no args"))
	}
	if err := json.Unmarshal(t.Args, v); err != nil {
		return Permanent(fmt.Errorf("task %s args: %w", t.Name, err))
	}
	return nil
}

// Handler runs a task and returns its result (anything json.Marshal
// takes) or an error. Wrap an error with Permanent to fail without retry,
// or return RetryAfter to run again later without spending an attempt.
type Handler func(ctx context.Context, t *Task) (any, error)

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error { return permanent{err} }

type retryAfter struct {
	d   time.Duration
	err error
}

func (r retryAfter) Error() string { return fmt.Sprintf("retry after %s: %v", r.d, r.err) }
func (r retryAfter) Unwrap() error { return r.err }

// RetryAfter asks for another run after d that does not count against the
// task's retries (a rate limit, a dependency not ready yet).
func RetryAfter(d time.Duration, err error) error { return retryAfter{d, err} }

// Config tunes a Worker.
type Config struct {
	// APIKey authenticates the worker (the tenant's key).
	APIKey string
	// Queues to take tasks from; default ["default"].
	Queues []string
	// Slots is how many tasks run at once; default 1.
	Slots int
	// Lanes, when set, replace Queues and Slots: each lane leases from its
	// queues into slots of its own, so a busy lane (bulk) never takes the
	// slots of another (critical).
	Lanes []Lane
	// ID names the worker in attempt logs; default "go-worker".
	ID string
	// DrainTimeout bounds how long Run waits for running handlers after
	// its context ends; then their contexts are cancelled and the tasks
	// handed back without spending an attempt. Default 30s.
	DrainTimeout time.Duration
	// OnStuck is called when a handler is still running past its task's
	// hard deadline.
	OnStuck func(t *Task)
	// Log receives warnings; default slog.Default().
	Log *slog.Logger
}

// Lane is a set of queues with its own slots.
type Lane struct {
	Queues []string
	Slots  int
}

type lane struct {
	Lane
	slots chan struct{}
}

// Worker runs handlers for leased tasks.
type Worker struct {
	client jobsv1.WorkerServiceClient
	cfg    Config

	mu       sync.Mutex
	handlers map[string]Handler

	running  atomic.Int64
	stuck    atomic.Int64
	refused  atomic.Int64
	lanes    []*lane
	hctx     context.Context
	hcancel  context.CancelFunc
	inflight sync.WaitGroup

	// completions gathers the successes reported while a CompleteTasks
	// call is out into the next one.
	completions coalesce.Batcher[*jobsv1.CompleteTaskRequest]
	// unbatched is set once the service answered CompleteTasks
	// Unimplemented (a version without it): one CompleteTask per task.
	unbatched atomic.Bool
}

// New returns a Worker that talks to the jobs service on cc.
func New(cc grpc.ClientConnInterface, cfg Config) *Worker {
	if len(cfg.Queues) == 0 {
		cfg.Queues = []string{"default"}
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.ID == "" {
		cfg.ID = "go-worker"
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if len(cfg.Lanes) == 0 {
		cfg.Lanes = []Lane{{Queues: cfg.Queues, Slots: cfg.Slots}}
	}
	w := &Worker{client: jobsv1.NewWorkerServiceClient(cc), cfg: cfg, handlers: map[string]Handler{}}
	for _, l := range cfg.Lanes {
		if len(l.Queues) == 0 {
			l.Queues = []string{"default"}
		}
		l.Slots = max(l.Slots, 1)
		w.lanes = append(w.lanes, &lane{Lane: l, slots: make(chan struct{}, l.Slots)})
	}
	return w
}

// Handle registers h for tasks named name.
func (w *Worker) Handle(name string, h Handler) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handlers[name] = h
}

// Running is the number of handlers running now.
func (w *Worker) Running() int { return int(w.running.Load()) }

// Stuck is the number of handlers running past their hard deadline.
func (w *Worker) Stuck() int { return int(w.stuck.Load()) }

// Refused counts outcomes the service refused because the lease had ended.
func (w *Worker) Refused() int { return int(w.refused.Load()) }

func (w *Worker) auth(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+w.cfg.APIKey)
}

// Run leases and runs tasks until ctx ends, then drains: it takes no new
// task, waits up to DrainTimeout for running handlers to report, and
// returns. It returns an error only for a refused configuration (bad key,
// bad queue names).
func (w *Worker) Run(ctx context.Context) error {
	w.hctx, w.hcancel = context.WithCancel(context.WithoutCancel(ctx))
	defer w.hcancel()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	errs := make(chan error, len(w.lanes))
	for _, l := range w.lanes {
		go func() {
			err := w.lease(lctx, l)
			if err != nil {
				stop() // a refused configuration stops every lane
			}
			errs <- err
		}()
	}
	var err error
	for range w.lanes {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	done := make(chan struct{})
	go func() { w.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.DrainTimeout):
		w.hcancel()
		<-done
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// lease keeps a lease stream of l open until ctx ends; it returns an
// error only for a refused configuration.
func (w *Worker) lease(ctx context.Context, l *lane) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := w.session(ctx, l)
		if c := status.Code(err); c == codes.Unauthenticated || c == codes.InvalidArgument || c == codes.PermissionDenied {
			return err
		}
		if err != nil && ctx.Err() == nil {
			w.cfg.Log.Warn("jobs worker: lease stream ended", "queues", l.Queues, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
	return nil
}

func (w *Worker) session(ctx context.Context, l *lane) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := w.client.Lease(w.auth(sctx), &jobsv1.LeaseRequest{Queues: l.Queues, Slots: int32(l.Slots), WorkerId: w.cfg.ID})
	if err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case l.slots <- struct{}{}:
		default:
			// Every slot is taken, by a handler that overran its hard
			// limit: hand the task back without spending an attempt.
			w.report(m, nil, RetryAfter(time.Second, errors.New("worker slots held by stuck handlers")))
			continue
		}
		w.inflight.Add(1)
		go func() {
			defer w.inflight.Done()
			defer func() { <-l.slots }()
			w.run(m)
		}()
	}
}

func (w *Worker) run(m *jobsv1.LeaseResponse) {
	w.running.Add(1)
	defer w.running.Add(-1)
	pt := m.GetTask()
	t := &Task{ID: pt.GetId(), Name: pt.GetName(), Queue: pt.GetQueue(), Attempt: int(m.GetAttempt()), HardDeadline: m.GetHardDeadline().AsTime()}
	if pt.GetArgs() != nil {
		t.Args, _ = protojson.Marshal(pt.GetArgs())
	}
	w.mu.Lock()
	h := w.handlers[t.Name]
	w.mu.Unlock()
	if h == nil {
		w.report(m, nil, fmt.Errorf("no handler registered for task %q on worker %s", t.Name, w.cfg.ID))
		return
	}
	soft := time.Now().Add(pt.GetSoftTimeLimit().AsDuration())
	if pt.GetSoftTimeLimit() == nil {
		soft = t.HardDeadline
	}
	hctx, cancel := context.WithDeadline(trace.Resume(w.hctx, m.GetTraceparent()), soft)
	defer cancel()

	var lost atomic.Bool
	finished := make(chan struct{})
	go w.heartbeat(m, t, cancel, &lost, finished)

	res, err := safe(hctx, h, t)
	close(finished)
	if lost.Load() {
		w.refused.Add(1)
		w.cfg.Log.Warn("jobs worker: lease ended before the handler returned; its outcome is dropped", "task_id", t.ID)
		return
	}
	if err != nil && w.hctx.Err() != nil {
		err = RetryAfter(time.Millisecond, fmt.Errorf("worker shut down: %w", err))
	}
	w.report(m, res, err)
}

func safe(ctx context.Context, h Handler, t *Task) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return h(ctx, t)
}

// heartbeat renews the lease until finished, cancels the handler when the
// task is cancelled or the lease is lost, and flags a stuck handler.
func (w *Worker) heartbeat(m *jobsv1.LeaseResponse, t *Task, cancel context.CancelFunc, lost *atomic.Bool, finished <-chan struct{}) {
	every := m.GetHeartbeatInterval().AsDuration()
	if every <= 0 {
		every = 5 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	hard := time.NewTimer(time.Until(t.HardDeadline))
	defer hard.Stop()
	stuck := false
	defer func() {
		if stuck {
			w.stuck.Add(-1)
		}
	}()
	for {
		select {
		case <-finished:
			return
		case <-hard.C:
			stuck = true
			w.stuck.Add(1)
			lost.Store(true)
			cancel()
			if w.cfg.OnStuck != nil {
				w.cfg.OnStuck(t)
			}
			continue
		case <-tick.C:
		}
		if lost.Load() {
			continue
		}
		ctx, c := context.WithTimeout(w.auth(context.Background()), every)
		r, err := w.client.Heartbeat(ctx, &jobsv1.HeartbeatRequest{TaskId: t.ID, LeaseToken: m.GetLeaseToken()})
		c()
		switch code := status.Code(err); {
		case code == codes.FailedPrecondition || code == codes.NotFound:
			lost.Store(true)
			cancel()
		case err == nil && r.GetCancelRequested():
			cancel()
		}
	}
}

// report sends the outcome, retrying while the service is unreachable.
func (w *Worker) report(m *jobsv1.LeaseResponse, res any, herr error) {
	id, token := m.GetTask().GetId(), m.GetLeaseToken()
	call := func(ctx context.Context) error {
		if herr == nil {
			v, err := toValue(res)
			if err != nil {
				herr = Permanent(fmt.Errorf("result: %w", err))
			} else {
				return w.complete(ctx, &jobsv1.CompleteTaskRequest{TaskId: id, LeaseToken: token, Result: v})
			}
		}
		req := &jobsv1.FailTaskRequest{TaskId: id, LeaseToken: token, Error: herr.Error()}
		var p permanent
		var ra retryAfter
		switch {
		case errors.As(herr, &ra):
			req.RetryAfter = durationpb.New(max(ra.d, time.Millisecond))
		case errors.As(herr, &p):
			req.NoRetry = true
		}
		_, err := w.client.FailTask(ctx, req)
		return err
	}
	deadline := time.Now().Add(time.Until(m.GetHardDeadline().AsTime()) + time.Minute)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		ctx, c := context.WithTimeout(w.auth(context.Background()), 10*time.Second)
		err := call(ctx)
		c()
		switch status.Code(err) {
		case codes.OK:
			return
		case codes.FailedPrecondition, codes.NotFound:
			w.refused.Add(1)
			w.cfg.Log.Warn("jobs worker: outcome refused", "task_id", id, "err", err)
			return
		case codes.InvalidArgument:
			if herr == nil {
				herr = Permanent(err) // e.g. a result over the size cap
				continue
			}
			w.cfg.Log.Error("jobs worker: outcome refused", "task_id", id, "err", err)
			return
		}
		if time.Now().After(deadline) {
			w.cfg.Log.Error("jobs worker: could not report an outcome; the lease will expire and the task run again", "task_id", id, "err", err)
			return
		}
		time.Sleep(wait)
	}
}

// maxBatchedBytes is the largest success that shares a CompleteTasks
// call; a larger result goes alone, so a batch of coalesce.DefaultMax
// stays under the 4 MiB a gRPC server takes by default.
const maxBatchedBytes = 16 << 10

// complete reports a success; successes reported while a CompleteTasks
// call is out go together in the next one. ctx carries the API key.
func (w *Worker) complete(ctx context.Context, req *jobsv1.CompleteTaskRequest) error {
	if w.unbatched.Load() || proto.Size(req) > maxBatchedBytes {
		_, err := w.client.CompleteTask(ctx, req)
		return err
	}
	return w.completions.Do(ctx, req, w.completeAll)
}

// completeAll sends reqs in one CompleteTasks call and returns each
// one's answer as the error CompleteTask would have returned.
func (w *Worker) completeAll(ctx context.Context, reqs []*jobsv1.CompleteTaskRequest) []error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	errs := make([]error, len(reqs))
	r, err := w.client.CompleteTasks(ctx, &jobsv1.CompleteTasksRequest{Requests: reqs})
	switch {
	case status.Code(err) == codes.Unimplemented:
		w.unbatched.Store(true)
		for i, req := range reqs {
			_, errs[i] = w.client.CompleteTask(ctx, req)
		}
		return errs
	case err != nil:
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	sts := r.GetStatuses()
	for i, st := range sts[:min(len(sts), len(reqs))] {
		if c := codes.Code(st.GetCode()); c != codes.OK {
			errs[i] = status.Error(c, st.GetMessage())
		}
	}
	return errs[:min(len(sts), len(reqs))] // items without an answer fail with coalesce.ErrNoAnswer
}

func toValue(res any) (*structpb.Value, error) {
	if res == nil {
		return nil, nil
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	v := &structpb.Value{}
	if err := protojson.Unmarshal(raw, v); err != nil {
		return nil, err
	}
	return v, nil
}

// WithAPIKey returns ctx carrying the API key, for calls to the jobs
// service's other APIs (enqueueing, reading results).
func WithAPIKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}
