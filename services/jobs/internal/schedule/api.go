package schedule

import (
	"context"
	"errors"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
)

// Validator checks a schedule's task as CreateTask would.
type Validator func(t *jobsv1.Task) error

// API serves ScheduleService.
type API struct {
	jobsv1.UnimplementedScheduleServiceServer
	Store    *Store
	Validate Validator
}

func invalid(err error) error { return status.Error(codes.InvalidArgument, err.Error()) }

func mapErr(err error) error {
	if errors.Is(err, ErrNotFound) {
		return status.Error(codes.NotFound, "schedule not found")
	}
	if errors.Is(err, ErrTooManySchedules) {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "schedule store: %v", err)
}

func (a *API) check(s *jobsv1.Schedule) error {
	if s == nil {
		return status.Error(codes.InvalidArgument, "schedule: required")
	}
	if _, err := ParseTiming(s, time.Now()); err != nil {
		return invalid(err)
	}
	if s.GetTask() == nil {
		return status.Error(codes.InvalidArgument, "task: required")
	}
	if s.GetTask().GetId() != "" {
		return status.Error(codes.InvalidArgument, "task.id: leave empty; each tick's task id is <schedule id>-<tick>")
	}
	if s.GetTask().GetEta() != nil || s.GetTask().GetCountdown() != nil || s.GetTask().GetExpireTime() != nil {
		return status.Error(codes.InvalidArgument, "task: eta, countdown and expireTime are not allowed in a schedule")
	}
	return a.Validate(s.GetTask())
}

// CreateSchedule creates a schedule.
func (a *API) CreateSchedule(ctx context.Context, r *jobsv1.CreateScheduleRequest) (*jobsv1.Schedule, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := a.check(r.GetSchedule()); err != nil {
		return nil, err
	}
	rec, err := a.Store.Create(ctx, tenant, r.GetSchedule(), time.Now())
	if err != nil {
		return nil, mapErr(err)
	}
	return rec.Proto(), nil
}

// GetSchedule reads a schedule.
func (a *API) GetSchedule(ctx context.Context, r *jobsv1.GetScheduleRequest) (*jobsv1.Schedule, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	rec, err := a.Store.Get(ctx, tenant, r.GetId())
	if err != nil {
		return nil, mapErr(err)
	}
	return rec.Proto(), nil
}

// ListSchedules lists schedules, newest first.
func (a *API) ListSchedules(ctx context.Context, r *jobsv1.ListSchedulesRequest) (*jobsv1.ListSchedulesResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	size := int(r.GetPageSize())
	switch {
	case size < 0 || size > 1000:
		return nil, status.Errorf(codes.InvalidArgument, "pageSize: %d, at most 1000", size)
	case size == 0:
		size = 50
	}
	offset := 0
	if t := r.GetPageToken(); t != "" {
		if offset, err = strconv.Atoi(t); err != nil || offset < 0 {
			return nil, status.Error(codes.InvalidArgument, "pageToken: not a token from this API")
		}
	}
	recs, more, err := a.Store.List(ctx, tenant, offset, size)
	if err != nil {
		return nil, mapErr(err)
	}
	out := &jobsv1.ListSchedulesResponse{}
	for _, rec := range recs {
		out.Schedules = append(out.Schedules, rec.Proto())
	}
	if more {
		out.NextPageToken = strconv.Itoa(offset + size)
	}
	return out, nil
}

// UpdateSchedule changes the fields named in the mask.
func (a *API) UpdateSchedule(ctx context.Context, r *jobsv1.UpdateScheduleRequest) (*jobsv1.Schedule, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	in := r.GetSchedule()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "schedule: required")
	}
	rec, err := a.Store.Get(ctx, tenant, in.GetId())
	if err != nil {
		return nil, mapErr(err)
	}
	paths := r.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		paths = []string{"cron", "time_zone", "interval", "paused", "task"}
	}
	d := rec.Def
	for _, p := range paths {
		switch p {
		case "cron":
			d.Cron = in.GetCron()
		case "time_zone", "timeZone":
			d.TimeZone = in.GetTimeZone()
		case "interval":
			d.Interval = in.GetInterval()
		case "paused":
			d.Paused = in.GetPaused()
		case "task":
			d.Task = in.GetTask()
		default:
			return nil, status.Errorf(codes.InvalidArgument, "updateMask: %q cannot be updated (cron, time_zone, interval, paused, task)", p)
		}
	}
	if err := a.check(d); err != nil {
		return nil, err
	}
	if err := a.Store.Replace(ctx, rec, time.Now()); err != nil {
		return nil, mapErr(err)
	}
	return rec.Proto(), nil
}

// DeleteSchedule deletes a schedule; tasks it enqueued are not touched.
func (a *API) DeleteSchedule(ctx context.Context, r *jobsv1.DeleteScheduleRequest) (*jobsv1.DeleteScheduleResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := a.Store.Delete(ctx, tenant, r.GetId()); err != nil {
		return nil, mapErr(err)
	}
	return &jobsv1.DeleteScheduleResponse{}, nil
}
