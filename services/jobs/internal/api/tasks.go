package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/jobs/internal/bus"
	"github.com/hookyard/hookyard/services/jobs/internal/httptask"
	"github.com/hookyard/hookyard/services/jobs/internal/runner"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// Deps are what the APIs share.
type Deps struct {
	Store  *store.Store
	Pump   *runner.Pump
	Hub    *runner.Hub
	Bus    *bus.Bus
	Policy ssrf.Policy
	Log    *slog.Logger
	// Heartbeat is the interval workers are told to heartbeat at; a lease
	// lasts two of them.
	HeartbeatInterval time.Duration
	// Ended is told about every attempt ended through the API.
	Ended func(tenant, id, state string)
}

// Tasks serves TaskService.
type Tasks struct {
	jobsv1.UnimplementedTaskServiceServer
	Deps
}

// Enqueue validates and stores t for tenant and hands it to the broker if
// it is due now. It is also how schedules and triggers enqueue.
func (d *Deps) Enqueue(ctx context.Context, tenant string, t *jobsv1.Task) (*jobsv1.Task, error) {
	now := time.Now()
	spec, err := d.spec(t, now)
	if err != nil {
		return nil, err
	}
	spec.Trace = trace.Carry(ctx)
	id := t.GetId()
	if id == "" {
		id = uuid.NewString()
	} else if !idRe.MatchString(id) {
		return nil, invalid("id: %q: 1 to 128 letters, digits, '.', '_', ':' or '-'", id)
	}
	due := !spec.ETA.After(now)
	enqueue := d.Store.Enqueue
	if due {
		enqueue = d.Store.EnqueueHeld // published right here
	}
	st, err := enqueue(ctx, tenant, id, spec)
	if errors.Is(err, store.ErrExists) {
		return taskProto(st), nil // the id is the idempotency key
	}
	if err != nil {
		return nil, grpcErr(err)
	}
	if due {
		r := store.Ready{Tenant: tenant, ID: id, Gen: 1}
		if err := d.Pump.PublishNew(ctx, r, spec.Name, spec.Queue); err != nil {
			d.Log.WarnContext(ctx, "publish new task; the pump will retry", "task_id", id, "err", err)
			d.Pump.Failed(context.WithoutCancel(ctx), r)
		}
	}
	return taskProto(st), nil
}

// Validate checks t as Enqueue would, without enqueueing it.
func (d *Deps) Validate(t *jobsv1.Task) error {
	_, err := d.spec(t, time.Now())
	return err
}

func (d *Deps) spec(t *jobsv1.Task, now time.Time) (store.Spec, error) {
	spec, err := specOf(t, now)
	if err != nil {
		return spec, err
	}
	if spec.Name == bus.HTTPTask {
		if _, err := httptask.Parse(spec.Args, d.Policy); err != nil {
			return spec, invalid("%v", err)
		}
	}
	if spec.CallbackURL != "" {
		if err := d.Policy.ValidateURL(spec.CallbackURL); err != nil {
			return spec, invalid("callbackUrl: %v", err)
		}
		if _, err := sign.ParseSecret(spec.CallbackSecret); err != nil {
			return spec, invalid("callbackSecret: required with callbackUrl: %v", err)
		}
	} else if spec.CallbackSecret != "" {
		return spec, invalid("callbackSecret: only with callbackUrl")
	}
	return spec, nil
}

// CreateTask enqueues a task.
func (s *Tasks) CreateTask(ctx context.Context, r *jobsv1.CreateTaskRequest) (*jobsv1.Task, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.Enqueue(ctx, tenant, r.GetTask())
	if err == nil {
		err = s.replicated(ctx, []string{t.GetId()})
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// replicated is nil once the writes of an answer are on a Redis replica
// (redisconn.Replicated), so a failover cannot lose an acknowledged task.
// Otherwise the tasks ids are stored (and may run) but not acknowledged:
// the error names their ids, also those the service generated, so that a
// retry with the same ids cannot enqueue them twice.
func (d *Deps) replicated(ctx context.Context, ids []string) error {
	if err := redisconn.Replicated(ctx, d.Store.Redis()); err != nil {
		return server.UnavailableBecause(domain, "NOT_REPLICATED",
			"stored but not yet on a Redis replica; retry with the same task ids: "+strings.Join(ids, ","), err)
	}
	return nil
}

// domain is the ErrorInfo domain of the jobs service's errors.
const domain = "hookyard.jobs.v1"

// MaxBatch caps BatchCreateTasks.
const MaxBatch = 1000

// BatchCreateTasks validates every task, then enqueues them in order.
func (s *Tasks) BatchCreateTasks(ctx context.Context, r *jobsv1.BatchCreateTasksRequest) (*jobsv1.BatchCreateTasksResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if n := len(r.GetRequests()); n == 0 || n > MaxBatch {
		return nil, invalid("requests: %d, give 1 to %d", n, MaxBatch)
	}
	for i, req := range r.GetRequests() {
		if err := s.Validate(req.GetTask()); err != nil {
			return nil, invalid("requests[%d]: %s", i, status.Convert(err).Message())
		}
		if id := req.GetTask().GetId(); id != "" && !idRe.MatchString(id) {
			return nil, invalid("requests[%d].task.id: %q: 1 to 128 letters, digits, '.', '_', ':' or '-'", i, id)
		}
	}
	out := &jobsv1.BatchCreateTasksResponse{}
	for i, req := range r.GetRequests() {
		t, err := s.Enqueue(ctx, tenant, req.GetTask())
		if err != nil {
			return nil, status.Errorf(status.Code(err), "requests[%d] (the ones before it are enqueued): %s", i, status.Convert(err).Message())
		}
		out.Tasks = append(out.Tasks, t)
	}
	ids := make([]string, len(out.Tasks))
	for i, t := range out.Tasks {
		ids[i] = t.GetId()
	}
	if err := s.replicated(ctx, ids); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Tasks) id(ctx context.Context, id string) (string, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return "", err
	}
	if !idRe.MatchString(id) {
		return "", status.Errorf(codes.NotFound, "task not found")
	}
	return tenant, nil
}

// GetTask reads a task.
func (s *Tasks) GetTask(ctx context.Context, r *jobsv1.GetTaskRequest) (*jobsv1.Task, error) {
	tenant, err := s.id(ctx, r.GetId())
	if err != nil {
		return nil, err
	}
	t, err := s.Store.Get(ctx, tenant, r.GetId())
	if err != nil {
		return nil, grpcErr(err)
	}
	return taskProto(t), nil
}

var states = map[string]bool{"": true, store.Pending: true, store.Running: true, store.Succeeded: true, store.Failed: true, store.Cancelled: true}

// ListTasks lists tasks, newest first.
func (s *Tasks) ListTasks(ctx context.Context, r *jobsv1.ListTasksRequest) (*jobsv1.ListTasksResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !states[r.GetState()] {
		return nil, invalid("state: %q: one of pending, running, succeeded, failed, cancelled", r.GetState())
	}
	if r.GetQueue() != "" {
		if err := ValidQueue(r.GetQueue()); err != nil {
			return nil, err
		}
	}
	size := int(r.GetPageSize())
	switch {
	case size < 0 || size > 1000:
		return nil, invalid("pageSize: %d, at most 1000", size)
	case size == 0:
		size = 50
	}
	ts, next, err := s.Store.List(ctx, tenant, store.Filter{State: r.GetState(), Queue: r.GetQueue(), Name: r.GetName()}, size, r.GetPageToken())
	if err != nil {
		if r.GetPageToken() != "" && err.Error() == "bad cursor" {
			return nil, invalid("pageToken: not a token from this API")
		}
		return nil, grpcErr(err)
	}
	out := &jobsv1.ListTasksResponse{NextPageToken: next}
	for _, t := range ts {
		out.Tasks = append(out.Tasks, taskProto(t))
	}
	return out, nil
}

// CancelTask cancels a pending task or asks a running one to stop.
func (s *Tasks) CancelTask(ctx context.Context, r *jobsv1.CancelTaskRequest) (*jobsv1.Task, error) {
	tenant, err := s.id(ctx, r.GetId())
	if err != nil {
		return nil, err
	}
	before, err := s.Store.Get(ctx, tenant, r.GetId())
	if err != nil {
		return nil, grpcErr(err)
	}
	if before.State == store.Succeeded || before.State == store.Failed {
		return nil, status.Errorf(codes.FailedPrecondition, "task already %s", before.State)
	}
	t, err := s.Store.Cancel(ctx, tenant, r.GetId())
	if err != nil {
		return nil, grpcErr(err)
	}
	if before.State == store.Pending && t.State == store.Cancelled && s.Ended != nil {
		s.Ended(tenant, t.ID, t.State)
	}
	return taskProto(t), nil
}

// RetryTask runs a failed or cancelled task again.
func (s *Tasks) RetryTask(ctx context.Context, r *jobsv1.RetryTaskRequest) (*jobsv1.Task, error) {
	tenant, err := s.id(ctx, r.GetId())
	if err != nil {
		return nil, err
	}
	t, err := s.Store.Retry(ctx, tenant, r.GetId())
	if err != nil {
		return nil, grpcErr(err)
	}
	s.Pump.Wake()
	return taskProto(t), nil
}

// WaitTask blocks until the task ends or the timeout passes.
func (s *Tasks) WaitTask(ctx context.Context, r *jobsv1.WaitTaskRequest) (*jobsv1.Task, error) {
	tenant, err := s.id(ctx, r.GetId())
	if err != nil {
		return nil, err
	}
	timeout := 30 * time.Second
	if r.GetTimeout() != nil {
		if timeout, err = duration("timeout", r.GetTimeout()); err != nil {
			return nil, err
		}
		if timeout < 0 || timeout > 5*time.Minute {
			return nil, invalid("timeout: %s is outside 0s..5m", timeout)
		}
	}
	t, err := s.Store.Wait(ctx, tenant, r.GetId(), timeout)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, grpcErr(err)
	}
	return taskProto(t), nil
}
