package worker_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/worker"
)

func startWorker(t *testing.T, e *jobstest.Env, cfg worker.Config, handlers map[string]worker.Handler) (*worker.Worker, func()) {
	t.Helper()
	cfg.APIKey = e.Acme.Key
	w := worker.New(e.Replicas[0].Conn, cfg)
	for n, h := range handlers {
		w.Handle(n, h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
	})
	return w, stop
}

func enqueue(t *testing.T, e *jobstest.Env, task *jobsv1.Task) *jobsv1.Task {
	t.Helper()
	got, err := e.Replicas[0].Tasks.CreateTask(e.Acme.Ctx(context.Background()), &jobsv1.CreateTaskRequest{Task: task})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestHandlersResultsAndErrors(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	type add struct{ A, B int }
	startWorker(t, e, worker.Config{Queues: []string{"math"}, Slots: 4}, map[string]worker.Handler{
		"add": func(ctx context.Context, task *worker.Task) (any, error) {
			var a add
			if err := task.Bind(&a); err != nil {
				return nil, err
			}
			return a.A + a.B, nil
		},
		"fatal": func(ctx context.Context, task *worker.Task) (any, error) {
			return nil, worker.Permanent(errors.New("bad input"))
		},
	})
	args, _ := structpb.NewValue(map[string]any{"A": 2, "B": 3})
	sum := enqueue(t, e, &jobsv1.Task{Name: "add", Queue: "math", Args: args})
	fatal := enqueue(t, e, &jobsv1.Task{Name: "fatal", Queue: "math", MaxRetries: 5})
	bad := enqueue(t, e, &jobsv1.Task{Name: "add", Queue: "math", MaxRetries: -1})
	if got := e.WaitState(t, e.Acme, sum.Id, "succeeded", 20*time.Second); got.Result.GetNumberValue() != 5 {
		t.Errorf("result %v", got.Result)
	}
	if got := e.WaitState(t, e.Acme, fatal.Id, "failed", 20*time.Second); got.Attempts != 1 || got.Error != "bad input" {
		t.Errorf("permanent error: %d attempts, %q", got.Attempts, got.Error)
	}
	e.WaitState(t, e.Acme, bad.Id, "failed", 20*time.Second)
}

// A handler that ignores its context past the hard limit: the service
// fails the attempt and retries elsewhere (here: the worker's other slot),
// the stuck handler keeps its slot until it returns and is counted, and its
// late result is dropped.
func TestStuckHandlerKeepsSlotAndLateResultIsDropped(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	release := make(chan struct{})
	var stuckSeen atomic.Int32
	w, _ := startWorker(t, e, worker.Config{Slots: 2, OnStuck: func(*worker.Task) { stuckSeen.Add(1) }}, map[string]worker.Handler{
		"stubborn": func(ctx context.Context, task *worker.Task) (any, error) {
			if task.Attempt == 1 {
				<-release // ignores ctx
				return "late", nil
			}
			return "on time", nil
		},
	})
	task := enqueue(t, e, &jobsv1.Task{Name: "stubborn", SoftTimeLimit: durationpb.New(200 * time.Millisecond),
		HardTimeLimit: durationpb.New(time.Second), RetryBackoff: durationpb.New(10 * time.Millisecond)})
	got := e.WaitState(t, e.Acme, task.Id, "succeeded", 20*time.Second)
	if got.Result.GetStringValue() != "on time" || got.AttemptLog[0].Error != "hard time limit exceeded" {
		t.Fatalf("task %v", got)
	}
	jobstest.WaitFor(t, 10*time.Second, "the stuck handler to be counted", func() bool { return w.Stuck() == 1 && w.Running() == 1 })
	close(release)
	jobstest.WaitFor(t, 10*time.Second, "the stuck handler to return", func() bool { return w.Stuck() == 0 && w.Running() == 0 })
	if stuckSeen.Load() != 1 {
		t.Errorf("OnStuck called %d times", stuckSeen.Load())
	}
	after, _ := e.Replicas[0].Tasks.GetTask(e.Acme.Ctx(context.Background()), &jobsv1.GetTaskRequest{Id: task.Id})
	if after.Result.GetStringValue() != "on time" {
		t.Errorf("late result overwrote the task: %v", after.Result)
	}
}

// Cancel reaches a running handler through its context.
func TestCancelReachesHandler(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	started := make(chan string, 1)
	startWorker(t, e, worker.Config{}, map[string]worker.Handler{
		"wait": func(ctx context.Context, task *worker.Task) (any, error) {
			started <- task.ID
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	task := enqueue(t, e, &jobsv1.Task{Name: "wait"})
	<-started
	if _, err := e.Replicas[0].Tasks.CancelTask(e.Acme.Ctx(context.Background()), &jobsv1.CancelTaskRequest{Id: task.Id}); err != nil {
		t.Fatal(err)
	}
	e.WaitState(t, e.Acme, task.Id, "cancelled", 20*time.Second)
}

// Draining finishes running handlers and reports them before Run returns.
func TestGracefulDrain(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	started := make(chan struct{}, 1)
	_, stop := startWorker(t, e, worker.Config{}, map[string]worker.Handler{
		"slow": func(ctx context.Context, task *worker.Task) (any, error) {
			started <- struct{}{}
			time.Sleep(500 * time.Millisecond)
			return "done", nil
		},
	})
	task := enqueue(t, e, &jobsv1.Task{Name: "slow"})
	<-started
	stop()
	got, _ := e.Replicas[0].Tasks.GetTask(e.Acme.Ctx(context.Background()), &jobsv1.GetTaskRequest{Id: task.Id})
	if got.State != "succeeded" {
		t.Fatalf("after drain: %s", got.State)
	}
}

// A lane full of slow bulk work does not delay the critical lane.
func TestLanesHaveTheirOwnSlots(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	release := make(chan struct{})
	defer close(release)
	startWorker(t, e, worker.Config{Lanes: []worker.Lane{{Queues: []string{"bulk"}, Slots: 1}, {Queues: []string{"critical"}, Slots: 1}}},
		map[string]worker.Handler{
			"slow": func(ctx context.Context, _ *worker.Task) (any, error) {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil, nil
			},
			"fast": func(context.Context, *worker.Task) (any, error) { return "ok", nil },
		})
	for range 3 {
		enqueue(t, e, &jobsv1.Task{Name: "slow", Queue: "bulk"})
	}
	urgent := enqueue(t, e, &jobsv1.Task{Name: "fast", Queue: "critical"})
	e.WaitState(t, e.Acme, urgent.Id, "succeeded", 20*time.Second)
}
