package jobs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/api"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// CompleteTasks answers each item as CompleteTask would have: recorded,
// refused for a stale lease token, a result over the cap, an unknown task
// or another tenant's task; one refused item does not fail the others.
func TestCompleteTasksAnswersEachItem(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{Heartbeat: 5 * time.Second})
	r := e.Replicas[0]
	ctx := e.Acme.Ctx(context.Background())
	for range 4 {
		_, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "x", Queue: "many"}})
		if err != nil {
			t.Fatal(err)
		}
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	stream, err := r.Workers.Lease(sctx, &jobsv1.LeaseRequest{Queues: []string{"many"}, Slots: 4, WorkerId: "w"})
	if err != nil {
		t.Fatal(err)
	}
	var ls []*jobsv1.LeaseResponse
	for range 4 {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, m)
	}
	big, _ := structpb.NewValue(strings.Repeat("x", api.MaxResultBytes))
	ok, _ := structpb.NewValue("done")
	item := func(m *jobsv1.LeaseResponse, token int64, v *structpb.Value) *jobsv1.CompleteTaskRequest {
		return &jobsv1.CompleteTaskRequest{TaskId: m.Task.Id, LeaseToken: token, Result: v}
	}
	res, err := r.Workers.CompleteTasks(ctx, &jobsv1.CompleteTasksRequest{Requests: []*jobsv1.CompleteTaskRequest{
		item(ls[0], ls[0].LeaseToken, ok),
		item(ls[1], ls[1].LeaseToken+1, ok),
		item(ls[2], ls[2].LeaseToken, big),
		{TaskId: "no-such-task", LeaseToken: 1},
		item(ls[3], ls[3].LeaseToken, nil),
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []codes.Code{codes.OK, codes.FailedPrecondition, codes.InvalidArgument, codes.NotFound, codes.OK}
	if len(res.Statuses) != len(want) {
		t.Fatalf("%d statuses, want %d", len(res.Statuses), len(want))
	}
	for i, st := range res.Statuses {
		if codes.Code(st.Code) != want[i] {
			t.Errorf("item %d: %v %q, want %v", i, codes.Code(st.Code), st.Message, want[i])
		}
	}
	if got := e.WaitState(t, e.Acme, ls[0].Task.Id, "succeeded", 10*time.Second); got.Result.GetStringValue() != "done" {
		t.Errorf("result %v", got.Result)
	}
	e.WaitState(t, e.Acme, ls[3].Task.Id, "succeeded", 10*time.Second)
	for _, m := range ls[1:3] {
		if got, err := r.Tasks.GetTask(ctx, &jobsv1.GetTaskRequest{Id: m.Task.Id}); err != nil || got.State != "running" {
			t.Errorf("refused item's task %s: %v %v, want running", m.Task.Id, got.GetState(), err)
		}
	}
	// Another tenant cannot complete acme's task.
	res, err = r.Workers.CompleteTasks(e.Other.Ctx(context.Background()), &jobsv1.CompleteTasksRequest{Requests: []*jobsv1.CompleteTaskRequest{
		item(ls[1], ls[1].LeaseToken, ok),
	}})
	if err != nil || codes.Code(res.Statuses[0].Code) != codes.NotFound {
		t.Fatalf("other tenant: %v %v, want NotFound", res, err)
	}
	// Too many items at once are refused as a whole.
	_, err = r.Workers.CompleteTasks(ctx, &jobsv1.CompleteTasksRequest{Requests: make([]*jobsv1.CompleteTaskRequest, api.MaxCompletions+1)})
	if code := status.Code(err); code != codes.InvalidArgument {
		t.Fatalf("%d items: %v, want InvalidArgument", api.MaxCompletions+1, err)
	}
}
