package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/worker"
)

// A handler runs in the trace of the request that enqueued its task, so a
// worker's spans and logs join the webhook or call that caused the work.
func TestHandlerJoinsTheEnqueuersTrace(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	got := make(chan string, 1)
	startWorker(t, e, worker.Config{Queues: []string{"traced"}}, map[string]worker.Handler{
		"traced": func(ctx context.Context, task *worker.Task) (any, error) {
			got <- trace.Carry(ctx)
			return nil, nil
		},
	})
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(e.Acme.Ctx(context.Background()),
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := e.Replicas[0].Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "traced", Queue: "traced"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case tp := <-got:
		if parts := strings.Split(tp, "-"); len(parts) != 4 || parts[1] != traceID {
			t.Fatalf("handler's traceparent %q, want trace id %s", tp, traceID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("handler never ran")
	}
}
