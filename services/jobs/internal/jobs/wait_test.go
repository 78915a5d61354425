package jobs_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// WaitTask calls share one Redis subscription per replica (none of their
// own) and are capped: one more than the cap is RESOURCE_EXHAUSTED, and
// the waiting calls still see the task end.
func TestWaitSharesSubscriptionAndIsCapped(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{MaxWaiters: 2})
	r := e.Replicas[0]
	ctx := e.Acme.Ctx(context.Background())
	task, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "nobody.runs.this"}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *jobsv1.Task, 2)
	for range 2 {
		go func() {
			got, err := r.Tasks.WaitTask(ctx, &jobsv1.WaitTaskRequest{Id: task.Id, Timeout: durationpb.New(time.Minute)})
			// The probe below holds a slot for a moment while the cap is
			// not yet reached.
			for status.Code(err) == codes.ResourceExhausted {
				time.Sleep(10 * time.Millisecond)
				got, err = r.Tasks.WaitTask(ctx, &jobsv1.WaitTaskRequest{Id: task.Id, Timeout: durationpb.New(time.Minute)})
			}
			if err != nil {
				t.Errorf("wait: %v", err)
			}
			done <- got
		}()
	}
	jobstest.WaitFor(t, 20*time.Second, "a third wait to be refused", func() bool {
		_, err := r.Tasks.WaitTask(ctx, &jobsv1.WaitTaskRequest{Id: task.Id, Timeout: durationpb.New(0)})
		return status.Code(err) == codes.ResourceExhausted
	})
	chans, err := e.Redis.PubSubChannels(context.Background(), "{"+e.Config.KeyPrefix+"}:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(chans) != 0 {
		t.Errorf("waits subscribed channels of their own: %v", chans)
	}
	if _, err := r.Tasks.CancelTask(ctx, &jobsv1.CancelTaskRequest{Id: task.Id}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case got := <-done:
			if got.GetState() != "cancelled" {
				t.Errorf("wait returned %v", got.GetState())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a wait did not return after the task ended")
		}
	}
	got, err := r.Tasks.WaitTask(ctx, &jobsv1.WaitTaskRequest{Id: task.Id, Timeout: durationpb.New(time.Second)})
	if err != nil || got.GetState() != "cancelled" {
		t.Fatalf("wait after the others returned: %v %v", got, err)
	}
}

// Waiting on another tenant's task answers NotFound at once (not after
// the timeout), on gRPC and REST, and tells nothing of the task.
func TestWaitOnAnotherTenantsTaskIsNotFoundAtOnce(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	r := e.Replicas[0]
	task, err := r.Tasks.CreateTask(e.Acme.Ctx(context.Background()), &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "nobody.runs.this"}})
	if err != nil {
		t.Fatal(err)
	}
	// A deadline shorter than the wait's timeout: a call that waits
	// ends with DEADLINE_EXCEEDED instead of NOT_FOUND.
	ctx, cancel := context.WithTimeout(e.Other.Ctx(context.Background()), 20*time.Second)
	defer cancel()
	_, err = r.Tasks.WaitTask(ctx, &jobsv1.WaitTaskRequest{Id: task.Id, Timeout: durationpb.New(5 * time.Minute)})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("wait on another tenant's task: %v", err)
	}
	if code, body := e.REST(t, e.Other, "GET", "/v1/tasks/"+task.Id+":wait?timeout=300s", ""); code != 404 {
		t.Fatalf("REST wait on another tenant's task: %d %v", code, body)
	}
}
