package jobs_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/worker"
)

// A rate limit on a task name holds across two replicas and four workers:
// the starts of its tasks (attempt start times, as the lease script
// recorded them) never exceed burst plus one per period in any window,
// each task runs in one attempt (waiting for its turn spends none), and
// a task waits for its turn in the schedule, deferred a bounded number of
// times rather than bounced through the broker. Another name is not held
// back.
func TestRateLimitSharedByReplicasAndWorkers(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{Replicas: 2})
	const (
		n      = 40
		rate   = 25.0
		burst  = 2
		period = time.Second / time.Duration(rate)
	)
	code, body := e.REST(t, e.Acme, "PUT", "/v1/rateLimits/mail.send", fmt.Sprintf(`{"perSecond": %v, "burst": %d}`, rate, burst))
	if code != 200 || body["name"] != "mail.send" || body["burst"] != float64(burst) {
		t.Fatalf("set rate limit: %d %v", code, body)
	}
	ctx := e.Acme.Ctx(context.Background())
	list, err := e.Replicas[1].Queues.ListRateLimits(ctx, &jobsv1.ListRateLimitsRequest{})
	if err != nil || len(list.GetRateLimits()) != 1 || list.GetRateLimits()[0].GetPerSecond() != rate {
		t.Fatalf("list rate limits: %v %v", list, err)
	}
	other, err := e.Replicas[0].Queues.ListRateLimits(e.Other.Ctx(context.Background()), &jobsv1.ListRateLimitsRequest{})
	if err != nil || len(other.GetRateLimits()) != 0 {
		t.Fatalf("another tenant sees %v %v", other, err)
	}

	// Declared once up front: replicas declaring a new quorum queue at
	// the same moment can make the broker refuse the first publishes,
	// which the pump then retries after its rearm, a stall unrelated to
	// the limit.
	bus := e.Replicas[0].Jobs.Bus
	if err := bus.Ensure(context.Background(), bus.TaskQueue(e.Acme.Name, "mail")); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		w := worker.New(e.Replicas[i%2].Conn, worker.Config{APIKey: e.Acme.Key, Queues: []string{"mail"}, Slots: 4, ID: fmt.Sprintf("w%d", i)})
		noop := func(context.Context, *worker.Task) (any, error) { return nil, nil }
		w.Handle("mail.send", noop)
		w.Handle("mail.other", noop)
		wctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = w.Run(wctx); close(done) }()
		t.Cleanup(func() { stop(); <-done })
	}
	var limited, free []string
	for i := range n + 10 {
		name := "mail.send"
		if i >= n {
			name = "mail.other"
		}
		task, err := e.Replicas[i%2].Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: name, Queue: "mail"}})
		if err != nil {
			t.Fatal(err)
		}
		if i < n {
			limited = append(limited, task.Id)
		} else {
			free = append(free, task.Id)
		}
	}
	var starts []time.Time
	deferrals := 0
	for _, id := range limited {
		got := e.WaitState(t, e.Acme, id, "succeeded", time.Minute)
		if got.Attempts != 1 {
			t.Errorf("task %s took %d attempts: waiting for a turn spent one", id, got.Attempts)
		}
		starts = append(starts, got.StartTime.AsTime())
		deferrals += gen(t, e, id) - 1
	}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	// Generic cell rate: k+burst-1 starts after any start take at least
	// k periods (1ms slack for the millisecond timestamps).
	for i := range starts {
		for k := burst; i+k < len(starts); k++ {
			if gap, want := starts[i+k].Sub(starts[i]), time.Duration(k-burst+1)*period-time.Millisecond; gap < want {
				t.Fatalf("%d starts within %s, the limit allows %s for them", k+1, gap, want)
			}
		}
	}
	// None at all is possible on a host so loaded that the tasks start
	// slower than the limit by themselves.
	if deferrals > 4*n {
		t.Errorf("%d deferrals for %d tasks", deferrals, n)
	}
	for _, id := range free {
		e.WaitState(t, e.Acme, id, "succeeded", time.Minute)
		if g := gen(t, e, id); g != 1 {
			t.Errorf("task %s of an unlimited name was deferred (generation %d)", id, g)
		}
	}

	if code, body := e.REST(t, e.Acme, "DELETE", "/v1/rateLimits/mail.send", ""); code != 200 {
		t.Fatalf("delete: %d %v", code, body)
	}
	_, err = e.Replicas[0].Queues.DeleteRateLimit(ctx, &jobsv1.DeleteRateLimitRequest{Name: "mail.send"})
	wantCode(t, "delete again", err, codes.NotFound)
	if code, _ := e.REST(t, e.Acme, "PUT", "/v1/rateLimits/mail.send", `{"perSecond": 0}`); code != 400 {
		t.Errorf("perSecond 0: %d", code)
	}
}

// gen reads a task's generation: 1 plus the times it became pending
// again (here: deferred by its rate limit).
func gen(t *testing.T, e *jobstest.Env, id string) int {
	t.Helper()
	v, err := e.Redis.HGet(context.Background(), "{"+e.Config.KeyPrefix+"}:t:"+e.Acme.Name+":"+id, "gen").Result()
	if err != nil {
		t.Fatal(err)
	}
	g, _ := strconv.Atoi(v)
	return g
}
