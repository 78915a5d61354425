package jobs_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/logtest"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// A task enqueued inside a trace (a traceparent on the call) runs and
// ends inside it: the jobs service's log lines about it, written by the
// http task runner and the announcer long after the call returned, carry
// its trace id, as do its request and its completion callback.
func TestTaskLogLinesCarryTraceID(t *testing.T) {
	t.Parallel()
	const traceID = "5bf92f3577b34da6a3ce929d0e0e4736"
	var logs logtest.Buffer
	seen := make(chan string, 4)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("traceparent")
	}))
	defer target.Close()
	e := jobstest.Start(t, jobstest.Options{
		Log: trace.LogHandler(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	args, _ := structpb.NewValue(map[string]any{"url": target.URL})
	ctx := metadata.AppendToOutgoingContext(e.Acme.Ctx(context.Background()), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	task, err := e.Replicas[0].Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "http", Args: args}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case tp := <-seen:
		if p := strings.Split(tp, "-"); len(p) != 4 || p[1] != traceID {
			t.Errorf("the task's request carries traceparent %q, want trace %s", tp, traceID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the task's request never came")
	}
	want := map[string]bool{"http task attempt": false, "task ended": false}
	jobstest.WaitFor(t, 30*time.Second, "the task's log lines", func() bool {
		for _, line := range logs.Lines() {
			msg, _ := line["msg"].(string)
			if _, ok := want[msg]; !ok || line["task_id"] != task.GetId() {
				continue
			}
			if line["trace_id"] != traceID {
				t.Fatalf("log line %v, want trace_id %s", line, traceID)
			}
			want[msg] = true
		}
		return want["http task attempt"] && want["task ended"]
	})
}
