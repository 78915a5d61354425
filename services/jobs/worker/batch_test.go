package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/testwait"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/worker"
)

// Successes reported while a CompleteTasks call is out go together in the
// next call: eight tasks that finish together cost two completion calls,
// not eight, and each is recorded with its own result.
func TestConcurrentSuccessesShareACompletionCall(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{Heartbeat: 5 * time.Second})
	const n = 8
	out, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	calls := &jobstest.Calls{ClientConnInterface: e.Replicas[0].Conn, Before: func(m string) {
		if m == "CompleteTasks" {
			first := false
			once.Do(func() { first = true })
			if first {
				close(out)
				<-release
			}
		}
	}}
	w := worker.New(calls, worker.Config{APIKey: e.Acme.Key, Queues: []string{"batch"}, Slots: n})
	w.Handle("echo", func(_ context.Context, task *worker.Task) (any, error) { return task.ID, nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ids := make([]string, n)
	for i := range ids {
		ids[i] = enqueue(t, e, &jobsv1.Task{Id: fmt.Sprintf("batch-%d", i), Name: "echo", Queue: "batch"}).Id
	}
	select {
	case <-out:
	case <-time.After(30 * time.Second):
		t.Fatalf("no CompleteTasks call (CompleteTask calls: %d)", calls.N("CompleteTask"))
	}
	testwait.Eventually(t, 30*time.Second, "the other successes queued", func() bool { return w.QueuedCompletions() == n-1 })
	close(release)
	for _, id := range ids {
		if got := e.WaitState(t, e.Acme, id, "succeeded", 20*time.Second); got.Result.GetStringValue() != id {
			t.Errorf("task %s: result %v", id, got.Result)
		}
	}
	if c, one := calls.N("CompleteTasks"), calls.N("CompleteTask"); c != 2 || one != 0 {
		t.Fatalf("CompleteTasks calls %d, CompleteTask calls %d; want 2 and 0", c, one)
	}
}

// unimplemented answers CompleteTasks as a service without it would.
type unimplemented struct{ *jobstest.Calls }

func (u unimplemented) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if method == jobsv1.WorkerService_CompleteTasks_FullMethodName {
		return status.Error(codes.Unimplemented, "unknown method CompleteTasks")
	}
	return u.Calls.Invoke(ctx, method, args, reply, opts...)
}

// Against a service without CompleteTasks the worker reports each success
// with CompleteTask.
func TestCompletionFallsBackWithoutCompleteTasks(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{Heartbeat: 5 * time.Second})
	calls := &jobstest.Calls{ClientConnInterface: e.Replicas[0].Conn}
	w := worker.New(unimplemented{calls}, worker.Config{APIKey: e.Acme.Key, Queues: []string{"old"}, Slots: 4})
	w.Handle("echo", func(_ context.Context, task *worker.Task) (any, error) { return task.ID, nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for i := range 3 {
		id := enqueue(t, e, &jobsv1.Task{Id: fmt.Sprintf("old-%d", i), Name: "echo", Queue: "old"}).Id
		if got := e.WaitState(t, e.Acme, id, "succeeded", 20*time.Second); got.Result.GetStringValue() != id {
			t.Errorf("task %s: result %v", id, got.Result)
		}
	}
	if one := calls.N("CompleteTask"); one != 3 {
		t.Fatalf("CompleteTask calls %d, want 3", one)
	}
}
