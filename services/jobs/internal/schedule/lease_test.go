package schedule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

func redisURL() string {
	if u := os.Getenv("HOOKYARD_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func newStore(t *testing.T) *Store {
	t.Helper()
	rdb, err := redisconn.Open(redisURL())
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("hookyard:test:jobs:sched:%x%04x", time.Now().UnixNano(), rand.N(1<<16))
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, "{"+prefix+"}:*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	return NewStore(store.New(rdb, store.Config{Prefix: prefix}))
}

func every(d time.Duration) *jobsv1.Schedule {
	return &jobsv1.Schedule{Interval: durationpb.New(d), Task: &jobsv1.Task{Name: "x"}}
}

// A tick being fired by one replica is leased to it: another replica
// polling meanwhile neither sees nor fires it.
func TestTickIsLeasedToOneReplica(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Create(ctx, "acme", every(time.Hour), time.Now().Add(-time.Hour-time.Second)); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := &Ticker{Store: s, Log: log, Now: time.Now, Enqueue: func(ctx context.Context, _ string, task *jobsv1.Task) (*jobsv1.Task, error) {
		close(entered)
		<-release
		return task, nil
	}}
	var bFired atomic.Int32
	b := &Ticker{Store: s, Log: log, Now: time.Now, Enqueue: func(ctx context.Context, _ string, task *jobsv1.Task) (*jobsv1.Task, error) {
		bFired.Add(1)
		return task, nil
	}}
	done := make(chan struct{})
	go func() { a.poll(ctx); close(done) }()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("replica a did not fire the due schedule")
	}
	b.poll(ctx)
	close(release)
	<-done
	if n := bFired.Load(); n != 0 {
		t.Fatalf("replica b fired %d ticks that replica a was firing", n)
	}
	b.poll(ctx)
	if n := bFired.Load(); n != 0 {
		t.Fatalf("replica b fired %d ticks after replica a advanced the schedule", n)
	}
}

// A tenant's schedules are capped.
func TestSchedulesPerTenantAreCapped(t *testing.T) {
	s := newStore(t)
	s.MaxSchedules = 2
	ctx := context.Background()
	for i := range 2 {
		if _, err := s.Create(ctx, "acme", every(time.Hour), time.Now()); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	if _, err := s.Create(ctx, "acme", every(time.Hour), time.Now()); !errors.Is(err, ErrTooManySchedules) {
		t.Fatalf("third schedule: %v, want ErrTooManySchedules", err)
	}
	if _, err := s.Create(ctx, "other", every(time.Hour), time.Now()); err != nil {
		t.Fatalf("another tenant: %v", err)
	}
}
