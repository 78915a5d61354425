package jobs_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// A task is not acknowledged while its record is on the Redis primary
// only: asked to wait for a replica the test Redis does not have,
// CreateTask and BatchCreateTasks answer UNAVAILABLE; once no replica is
// asked for, the same id is acknowledged.
func TestCreateTaskWaitsForReplica(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	c := e.Replicas[0].Tasks
	ctx := e.Acme.Ctx(context.Background())
	if err := redisconn.SetWait(e.Redis, redisconn.WaitConfig{Replicas: 1, Timeout: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: "r-1", Name: "x", Queue: "idle"}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("CreateTask without the replica: %v, want UNAVAILABLE", err)
	}
	_, err = c.BatchCreateTasks(ctx, &jobsv1.BatchCreateTasksRequest{Requests: []*jobsv1.CreateTaskRequest{
		{Task: &jobsv1.Task{Id: "r-2", Name: "x", Queue: "idle"}}, {Task: &jobsv1.Task{Id: "r-3", Name: "x", Queue: "idle"}}}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("BatchCreateTasks without the replica: %v, want UNAVAILABLE", err)
	}
	if err := redisconn.SetWait(e.Redis, redisconn.WaitConfig{Replicas: 0, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	task, err := c.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: "r-1", Name: "x", Queue: "idle"}})
	if err != nil || task.GetId() != "r-1" {
		t.Fatalf("CreateTask again: %v %v", task, err)
	}
}
