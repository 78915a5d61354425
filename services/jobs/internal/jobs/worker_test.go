package jobs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// recvTask leases one task on a fresh stream; the stream ends with ctx.
func recvTask(t *testing.T, ctx context.Context, c jobsv1.WorkerServiceClient, queue, worker string) *jobsv1.LeaseResponse {
	t.Helper()
	stream, err := c.Lease(ctx, &jobsv1.LeaseRequest{Queues: []string{queue}, Slots: 1, WorkerId: worker})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatalf("%s: recv: %v", worker, err)
	}
	return m
}

// A worker that dies mid-task (no more heartbeats, stream gone) loses its
// lease within two heartbeat intervals; another worker runs the task, and
// the dead worker's late completion is refused by the fencing token.
func TestKilledWorkerLosesLeaseAndStaleCompleteIsRefused(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{Heartbeat: 300 * time.Millisecond})
	r := e.Replicas[0]
	ctx := e.Acme.Ctx(context.Background())
	task, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "report.build", Queue: "reports"}})
	if err != nil {
		t.Fatal(err)
	}

	actx, kill := context.WithCancel(ctx)
	a := recvTask(t, actx, r.Workers, "reports", "worker-a")
	if a.Task.Id != task.Id || a.Attempt != 1 || a.LeaseToken == 0 {
		t.Fatalf("worker a got %v", a)
	}
	if _, err := r.Workers.Heartbeat(ctx, &jobsv1.HeartbeatRequest{TaskId: task.Id, LeaseToken: a.LeaseToken}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	killed := time.Now()
	kill() // kill -9: the stream drops, no heartbeat follows

	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	b := recvTask(t, bctx, r.Workers, "reports", "worker-b")
	took := time.Since(killed)
	if b.Task.Id != task.Id || b.Attempt != 2 || b.LeaseToken == a.LeaseToken {
		t.Fatalf("worker b got %v", b)
	}
	// Two heartbeat intervals plus the reaper's tick and scheduling slack
	// on a loaded machine.
	if took > 5*time.Second {
		t.Errorf("task moved after %s", took)
	}
	res, _ := structpb.NewValue("from b")
	if _, err := r.Workers.CompleteTask(ctx, &jobsv1.CompleteTaskRequest{TaskId: task.Id, LeaseToken: b.LeaseToken, Result: res}); err != nil {
		t.Fatalf("b complete: %v", err)
	}
	stale, _ := structpb.NewValue("from a")
	_, err = r.Workers.CompleteTask(ctx, &jobsv1.CompleteTaskRequest{TaskId: task.Id, LeaseToken: a.LeaseToken, Result: stale})
	wantCode(t, "stale complete", err, codes.FailedPrecondition)
	_, err = r.Workers.Heartbeat(ctx, &jobsv1.HeartbeatRequest{TaskId: task.Id, LeaseToken: a.LeaseToken})
	wantCode(t, "stale heartbeat", err, codes.FailedPrecondition)

	got, err := r.Tasks.GetTask(ctx, &jobsv1.GetTaskRequest{Id: task.Id})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "succeeded" || got.Result.GetStringValue() != "from b" || len(got.AttemptLog) != 2 {
		t.Fatalf("task %v", got)
	}
	if l := got.AttemptLog[0]; l.Outcome != "failed" || !strings.Contains(l.Error, "lease expired") || l.Worker != "worker-a" {
		t.Errorf("first attempt %v", l)
	}
	// Another tenant's worker cannot touch the task.
	_, err = r.Workers.CompleteTask(e.Other.Ctx(context.Background()), &jobsv1.CompleteTaskRequest{TaskId: task.Id, LeaseToken: b.LeaseToken})
	wantCode(t, "other tenant's complete", err, codes.NotFound)
}

// A handler that overruns the hard limit: the attempt fails at the limit,
// the task is retried, and the late outcome is refused.
func TestHardLimitFailsAttemptAndRefusesLateOutcome(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{Heartbeat: 300 * time.Millisecond})
	r := e.Replicas[0]
	ctx := e.Acme.Ctx(context.Background())
	task, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{
		Name: "slow", HardTimeLimit: durationpb.New(time.Second), MaxRetries: 1, RetryBackoff: durationpb.New(10 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	stream, err := r.Workers.Lease(lctx, &jobsv1.LeaseRequest{Slots: 2, WorkerId: "w"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// Heartbeat faithfully; the lease still ends at the hard deadline.
	go func() {
		for lctx.Err() == nil {
			_, err := r.Workers.Heartbeat(ctx, &jobsv1.HeartbeatRequest{TaskId: task.Id, LeaseToken: first.LeaseToken})
			if err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if second.Task.Id != task.Id || second.Attempt != 2 {
		t.Fatalf("second lease %v", second)
	}
	if !time.Now().After(first.HardDeadline.AsTime()) {
		t.Errorf("retried before the hard deadline %v", first.HardDeadline.AsTime())
	}
	_, err = r.Workers.CompleteTask(ctx, &jobsv1.CompleteTaskRequest{TaskId: task.Id, LeaseToken: first.LeaseToken})
	wantCode(t, "late complete", err, codes.FailedPrecondition)
	got, _ := r.Tasks.GetTask(ctx, &jobsv1.GetTaskRequest{Id: task.Id})
	if got.State != "running" || got.AttemptLog[0].Error != "hard time limit exceeded" {
		t.Fatalf("task %v", got)
	}
}

// Cancel reaches a running task through its heartbeat; the worker's
// report then ends it as cancelled, not retried.
func TestCancelRunningTask(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	r := e.Replicas[0]
	ctx := e.Acme.Ctx(context.Background())
	task, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "long"}})
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	m := recvTask(t, lctx, r.Workers, "default", "w")
	got, err := r.Tasks.CancelTask(ctx, &jobsv1.CancelTaskRequest{Id: task.Id})
	if err != nil || got.State != "running" || !got.CancelRequested {
		t.Fatalf("cancel: %v %v", got, err)
	}
	hb, err := r.Workers.Heartbeat(ctx, &jobsv1.HeartbeatRequest{TaskId: task.Id, LeaseToken: m.LeaseToken})
	if err != nil || !hb.CancelRequested {
		t.Fatalf("heartbeat: %v %v", hb, err)
	}
	f, err := r.Workers.FailTask(ctx, &jobsv1.FailTaskRequest{TaskId: task.Id, LeaseToken: m.LeaseToken, Error: "context canceled"})
	if err != nil || f.State != "cancelled" {
		t.Fatalf("fail: %v %v", f, err)
	}
}
