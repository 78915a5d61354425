package jobs_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/internal/trigger"
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

// A task whose id the service generated is stored (and may run) when the
// replica wait fails: the error must name its id, or the client's retry
// enqueues it a second time.
func TestUnreplicatedTaskErrorNamesGeneratedIDs(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	c := e.Replicas[0].Tasks
	ctx := e.Acme.Ctx(context.Background())
	if err := redisconn.SetWait(e.Redis, redisconn.WaitConfig{Replicas: 1, Timeout: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	_, err := c.BatchCreateTasks(ctx, &jobsv1.BatchCreateTasksRequest{Requests: []*jobsv1.CreateTaskRequest{
		{Task: &jobsv1.Task{Name: "x", Queue: "idle"}}, {Task: &jobsv1.Task{Id: "given", Name: "x", Queue: "idle"}}}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("BatchCreateTasks without the replica: %v, want UNAVAILABLE", err)
	}
	msg := status.Convert(err).Message()
	ids := strings.Split(msg[strings.LastIndex(msg, ": ")+2:], ",")
	if len(ids) != 2 || ids[1] != "given" {
		t.Fatalf("error %q: want both task ids", msg)
	}
	if err := redisconn.SetWait(e.Redis, redisconn.WaitConfig{Replicas: 0, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetTask(ctx, &jobsv1.GetTaskRequest{Id: ids[0]})
	if err != nil || got.GetId() != ids[0] {
		t.Fatalf("the generated id %q from the error: %v %v", ids[0], got, err)
	}
	if strings.Contains(msg, "redis") || strings.Contains(msg, "WAIT") {
		t.Fatalf("error %q carries Redis's own text", msg)
	}
}

// barrierHook counts the waits for a replica the service starts (each is
// a PUBLISH on redisconn's barrier channel).
type barrierHook struct{ n atomic.Int64 }

func (h *barrierHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *barrierHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *barrierHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if a := c.Args(); len(a) > 0 && fmt.Sprint(a[0]) == "publish" {
				h.n.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// A trigger's event is not acknowledged while the task it created is on
// the Redis primary only: it is handled again (another wait) until the
// replica confirms, then the task runs once.
func TestTriggerEventWaitsForReplica(t *testing.T) {
	t.Parallel()
	ran := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran <- r.URL.Path }))
	defer srv.Close()
	hook := &barrierHook{}
	e := jobstest.Start(t, jobstest.Options{RedisHook: hook})
	r := e.Replicas[0]
	code, tr := e.REST(t, e.Acme, "POST", "/v1/triggers", `{"eventType":"stripe.charge.*","task":{"name":"http","args":{"url":"`+srv.URL+`/run"}}}`)
	if code != 200 {
		t.Fatalf("create trigger: %d %v", code, tr)
	}
	if err := redisconn.SetWait(e.Redis, redisconn.WaitConfig{Replicas: 1, Timeout: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	before := hook.n.Load()
	msg, err := cloudevent.ToPublishing(&eventv1.Event{Id: "evt_r", Source: "stripe", Type: "charge.succeeded", Tenant: e.Acme.Name,
		Time: timestamppb.Now(), DataContentType: "application/json", Data: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Jobs.Publisher.Publish(context.Background(), e.Config.EventsExchange, cloudevent.RoutingKey("stripe", "charge.succeeded"), msg); err != nil {
		t.Fatal(err)
	}
	jobstest.WaitFor(t, 60*time.Second, "the event handled again", func() bool { return hook.n.Load()-before >= 2 })
	if err := redisconn.SetWait(e.Redis, redisconn.WaitConfig{Replicas: 0, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	e.WaitState(t, e.Acme, trigger.TaskID(tr["id"].(string), "evt_r"), "succeeded", 60*time.Second)
}
