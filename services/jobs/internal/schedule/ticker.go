package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
)

func tsOf(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// Enqueuer enqueues a task for a tenant (the task API's Enqueue).
type Enqueuer func(ctx context.Context, tenant string, t *jobsv1.Task) (*jobsv1.Task, error)

// MisfireGrace is how late a tick may still fire: a replica that falls
// behind, or a short outage, delays ticks but runs every one of them;
// ticks older than this when they could first be fired are skipped.
const MisfireGrace = time.Minute

// Ticker fires due schedules.
type Ticker struct {
	Store    *Store
	Enqueue  Enqueuer
	Log      *slog.Logger
	Interval time.Duration // default 100ms
	Now      func() time.Time
}

// TaskID is the id of a schedule's task for one tick.
func TaskID(scheduleID string, tick time.Time) string {
	return fmt.Sprintf("%s-%d", scheduleID, tick.UnixMilli())
}

// Run fires schedules until ctx ends.
func (t *Ticker) Run(ctx context.Context) error {
	if t.Interval <= 0 {
		t.Interval = 100 * time.Millisecond
	}
	if t.Now == nil {
		t.Now = time.Now
	}
	tick := time.NewTicker(t.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		t.poll(ctx)
	}
}

// poll fires the due schedules once.
func (t *Ticker) poll(ctx context.Context) {
	due, err := t.Store.Due(ctx, t.Now(), 32)
	if err != nil {
		if ctx.Err() == nil {
			t.Log.WarnContext(ctx, "schedules", "err", err)
		}
		return
	}
	for _, d := range due {
		if err := t.fire(ctx, d[0], d[1]); err != nil && ctx.Err() == nil {
			t.Log.WarnContext(ctx, "fire schedule", "schedule_id", d[1], "err", err)
		}
	}
}

func (t *Ticker) fire(ctx context.Context, tenant, id string) error {
	r, err := t.Store.Get(ctx, tenant, id)
	if errors.Is(err, ErrNotFound) {
		t.Store.Drop(ctx, tenant, id)
		return nil
	}
	if err != nil {
		return err
	}
	timing, err := r.Timing()
	if err != nil {
		return err
	}
	now := t.Now()
	if r.Next.After(now) {
		t.Store.Release(ctx, tenant, id, r.Next) // another replica advanced it
		return nil
	}
	taskID := TaskID(id, r.Next)
	task := proto.Clone(r.Def.GetTask()).(*jobsv1.Task)
	task.Id = taskID
	// Enqueue first: if this replica dies before advancing, the next one
	// enqueues the same id, which is taken once.
	if _, err := t.Enqueue(ctx, tenant, task); err != nil {
		if c := status.Code(err); c != codes.InvalidArgument && c != codes.AlreadyExists {
			t.Store.Release(ctx, tenant, id, r.Next) // due again at once, for any replica
			return fmt.Errorf("enqueue tick %s: %w", taskID, err)
		}
		// The task no longer passes validation (e.g. its URL is now
		// refused) or its unique key is held by an earlier tick's task:
		// skip the tick rather than retry it for ever.
		t.Log.WarnContext(ctx, "schedule skipped a tick", "schedule_id", id, "task_id", taskID, "err", err)
	}
	next := timing.Next(r.Next)
	if limit := now.Add(-MisfireGrace); next.Before(limit) {
		next = timing.Next(limit)
	}
	if _, err := t.Store.Advance(ctx, r, r.Next, next, taskID); err != nil {
		return fmt.Errorf("advance: %w", err)
	}
	return nil
}
