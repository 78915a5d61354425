package trigger

import (
	"context"
	"errors"
	"sort"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
)

// API serves TriggerService.
type API struct {
	jobsv1.UnimplementedTriggerServiceServer
	Store    *Store
	Consumer *Consumer
	// Validate checks the trigger's task as CreateTask would.
	Validate func(t *jobsv1.Task) error

	beforeUnbind atomic.Pointer[func()] // tests: runs just before a pattern is unbound
}

func mapErr(err error) error {
	if errors.Is(err, ErrNotFound) {
		return status.Error(codes.NotFound, "trigger not found")
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "trigger store: %v", err)
}

func output(t *jobsv1.Trigger) *jobsv1.Trigger {
	t = proto.Clone(t).(*jobsv1.Trigger)
	if t.Task != nil {
		t.Task.CallbackSecret = "" // input only
	}
	return t
}

// CreateTrigger creates a trigger and binds its pattern.
func (a *API) CreateTrigger(ctx context.Context, r *jobsv1.CreateTriggerRequest) (*jobsv1.Trigger, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := Validate(r.GetTrigger()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := a.Validate(r.GetTrigger().GetTask()); err != nil {
		return nil, err
	}
	unlock, err := a.Store.Lock(ctx, r.GetTrigger().GetEventType())
	if err != nil {
		return nil, mapErr(err)
	}
	defer unlock()
	// Bind first: a trigger that exists is never missing its binding.
	if err := a.Consumer.Bind(ctx, r.GetTrigger().GetEventType(), true); err != nil {
		return nil, status.Errorf(codes.Unavailable, "bind %s: %v", r.GetTrigger().GetEventType(), err)
	}
	t, err := a.Store.Create(ctx, tenant, r.GetTrigger())
	if err != nil {
		return nil, mapErr(err)
	}
	a.Consumer.Forget(tenant)
	return output(t), nil
}

// GetTrigger reads a trigger.
func (a *API) GetTrigger(ctx context.Context, r *jobsv1.GetTriggerRequest) (*jobsv1.Trigger, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	t, err := a.Store.Get(ctx, tenant, r.GetId())
	if err != nil {
		return nil, mapErr(err)
	}
	return output(t), nil
}

// ListTriggers lists the tenant's triggers by id.
func (a *API) ListTriggers(ctx context.Context, _ *jobsv1.ListTriggersRequest) (*jobsv1.ListTriggersResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	ts, err := a.Store.List(ctx, tenant)
	if err != nil {
		return nil, mapErr(err)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Id < ts[j].Id })
	out := &jobsv1.ListTriggersResponse{}
	for _, t := range ts {
		out.Triggers = append(out.Triggers, output(t))
	}
	return out, nil
}

// DeleteTrigger deletes a trigger and unbinds a pattern no trigger uses.
func (a *API) DeleteTrigger(ctx context.Context, r *jobsv1.DeleteTriggerRequest) (*jobsv1.DeleteTriggerResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	t, err := a.Store.Get(ctx, tenant, r.GetId())
	if err != nil {
		return nil, mapErr(err)
	}
	pattern := t.GetEventType()
	unlock, err := a.Store.Lock(ctx, pattern)
	if err != nil {
		return nil, mapErr(err)
	}
	defer unlock()
	unused, err := a.Store.Delete(ctx, tenant, t)
	if err != nil {
		return nil, mapErr(err)
	}
	a.Consumer.Forget(tenant)
	if unused {
		// Under the pattern's lock no create can count it meanwhile; if
		// the unbind fails, an extra binding only costs events the
		// consumer ignores.
		if f := a.beforeUnbind.Load(); f != nil {
			(*f)()
		}
		_ = a.Consumer.Bind(ctx, pattern, false)
	}
	return &jobsv1.DeleteTriggerResponse{}, nil
}
