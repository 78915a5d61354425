package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/worker"
)

// runWorker runs a worker of the public Go package on conn until the test
// ends.
func runWorker(t *testing.T, conn grpc.ClientConnInterface, key, queue string, slots int, handlers map[string]worker.Handler) {
	t.Helper()
	w := worker.New(conn, worker.Config{APIKey: key, Queues: []string{queue}, Slots: slots, ID: "w-" + queue, DrainTimeout: 5 * time.Second})
	for name, h := range handlers {
		w.Handle(name, h)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
}

// wait blocks until the task has ended (a minute at most) and returns it.
func wait(t *testing.T, e *jobstest.Env, id string) *jobsv1.Task {
	t.Helper()
	got, err := e.Replicas[0].Tasks.WaitTask(e.Acme.Ctx(context.Background()), &jobsv1.WaitTaskRequest{Id: id, Timeout: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatalf("wait %s: %v", id, err)
	}
	return got
}

func obj(t *testing.T, m map[string]any) *structpb.Value {
	t.Helper()
	v, err := structpb.NewValue(m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A chain of three runs its steps one after another, each with the result
// of the step before in its args; created and read through REST.
func TestChainRunsInOrderPassingResults(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	var mu sync.Mutex
	var order []float64
	runWorker(t, e.Replicas[0].Conn, e.Acme.Key, "chain", 4, map[string]worker.Handler{
		"add": func(ctx context.Context, task *worker.Task) (any, error) {
			var a struct {
				N        float64
				Previous *float64
			}
			if err := task.Bind(&a); err != nil {
				return nil, err
			}
			mu.Lock()
			order = append(order, a.N)
			mu.Unlock()
			if a.Previous == nil {
				return a.N, nil
			}
			return *a.Previous + a.N, nil
		},
	})

	code, body := e.REST(t, e.Acme, "POST", "/v1/chains", `{"id":"sum-1","resultArg":"previous","tasks":[
		{"name":"add","queue":"chain","args":{"n":1}},
		{"name":"add","queue":"chain","args":{"n":10}},
		{"name":"add","queue":"chain","args":{"n":100}}]}`)
	if code != 200 || body["state"] != "running" || len(body["tasks"].([]any)) != 3 {
		t.Fatalf("create chain: %d %v", code, body)
	}
	last := wait(t, e, "sum-1-3")
	if last.State != "succeeded" || last.Result.GetNumberValue() != 111 {
		t.Fatalf("last step %s with %v (%s), want succeeded with 111", last.State, last.Result, last.Error)
	}
	mu.Lock()
	if fmt.Sprint(order) != "[1 10 100]" {
		t.Errorf("steps ran as %v, want [1 10 100]", order)
	}
	mu.Unlock()
	if p := last.Args.GetStructValue().Fields["previous"].GetNumberValue(); p != 11 {
		t.Errorf("step 3 args %v, want previous 11", last.Args)
	}

	code, body = e.REST(t, e.Acme, "GET", "/v1/chains/sum-1", "")
	if code != 200 || body["state"] != "succeeded" {
		t.Fatalf("get chain: %d %v", code, body)
	}
	for i, raw := range body["tasks"].([]any) {
		task := raw.(map[string]any)
		if task["id"] != fmt.Sprintf("sum-1-%d", i+1) || task["state"] != "succeeded" {
			t.Errorf("step %d: %v", i+1, task)
		}
	}
	// The id is the idempotency key; another tenant sees nothing.
	code, body = e.REST(t, e.Acme, "POST", "/v1/chains", `{"id":"sum-1","tasks":[{"name":"add","queue":"chain","args":{"n":5}}]}`)
	if code != 200 || body["state"] != "succeeded" || len(body["tasks"].([]any)) != 3 {
		t.Errorf("create again: %d %v", code, body)
	}
	if code, _ := e.REST(t, e.Other, "GET", "/v1/chains/sum-1", ""); code != 404 {
		t.Errorf("other tenant: %d, want 404", code)
	}
}

// A step that fails for good stops the chain: the steps after it never
// run, are cancelled, and the chain and they say which step failed.
func TestChainStopsAtFailedStep(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	var thirdRan atomic.Int32
	runWorker(t, e.Replicas[0].Conn, e.Acme.Key, "orders", 2, map[string]worker.Handler{
		"reserve": func(ctx context.Context, task *worker.Task) (any, error) { return "reserved", nil },
		"charge": func(ctx context.Context, task *worker.Task) (any, error) {
			return nil, worker.Permanent(errors.New("card declined"))
		},
		"ship": func(ctx context.Context, task *worker.Task) (any, error) { thirdRan.Add(1); return "shipped", nil },
	})
	ctx := e.Acme.Ctx(context.Background())
	_, err := e.Replicas[0].Canvas.CreateChain(ctx, &jobsv1.CreateChainRequest{Chain: &jobsv1.Chain{Id: "order-7", Tasks: []*jobsv1.Task{
		{Name: "reserve", Queue: "orders"}, {Name: "charge", Queue: "orders"}, {Name: "ship", Queue: "orders"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	third := wait(t, e, "order-7-3")
	if third.State != "cancelled" || !strings.Contains(third.Error, "chain stopped: step 2 (order-7-2) failed: card declined") {
		t.Errorf("step 3: %s %q, want cancelled naming step 2", third.State, third.Error)
	}
	if second := wait(t, e, "order-7-2"); second.State != "failed" || second.Attempts != 1 {
		t.Errorf("step 2: %s after %d attempts", second.State, second.Attempts)
	}
	c, err := e.Replicas[0].Canvas.GetChain(ctx, &jobsv1.GetChainRequest{Id: "order-7"})
	if err != nil {
		t.Fatal(err)
	}
	if c.State != "failed" || c.Error != "step 2 (order-7-2) failed: card declined" || c.FinishTime == nil {
		t.Errorf("chain %s %q", c.State, c.Error)
	}
	if got := []string{c.Tasks[0].State, c.Tasks[1].State, c.Tasks[2].State}; fmt.Sprint(got) != "[succeeded failed cancelled]" {
		t.Errorf("steps %v", got)
	}
	// Step 3 is cancelled for good, so it can never have run.
	if n := thirdRan.Load(); n != 0 {
		t.Errorf("step 3 ran %d times", n)
	}
	_, err = e.Replicas[0].Canvas.CancelChain(ctx, &jobsv1.CancelChainRequest{Id: "order-7"})
	wantCode(t, "cancel a failed chain", err, codes.FailedPrecondition)
}

// Chords on two replicas, each with its own worker: the members of each
// chord are held until all have started, so their completions reach both
// replicas at once; every callback still runs exactly once, with the
// members' results in order.
func TestChordCallbackOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	const chords, members = 4, 12
	// A loaded host can miss heartbeats of held members; their attempts
	// then run again, which the retries below absorb.
	e := jobstest.Start(t, jobstest.Options{Replicas: 2, Heartbeat: time.Second})
	var started atomic.Int32
	all := make(chan struct{})
	var callbacks sync.Map // chord id → *atomic.Int32
	handlers := map[string]worker.Handler{
		"part": func(ctx context.Context, task *worker.Task) (any, error) {
			if started.Add(1) == chords*members {
				close(all)
			}
			select {
			case <-all:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			var a struct{ I int }
			if err := task.Bind(&a); err != nil {
				return nil, err
			}
			return a.I * a.I, nil
		},
		"total": func(ctx context.Context, task *worker.Task) (any, error) {
			var a struct {
				Chord   string
				Results []int
			}
			if err := task.Bind(&a); err != nil {
				return nil, err
			}
			n, _ := callbacks.LoadOrStore(a.Chord, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			sum := 0
			for _, r := range a.Results {
				sum += r
			}
			return map[string]any{"sum": sum, "n": len(a.Results), "first": a.Results[0], "last": a.Results[len(a.Results)-1]}, nil
		},
	}
	for _, r := range e.Replicas {
		runWorker(t, r.Conn, e.Acme.Key, "fan", chords*members, handlers)
	}
	ctx := e.Acme.Ctx(context.Background())
	want := 0
	for i := 1; i <= members; i++ {
		want += i * i
	}
	for c := range chords {
		g := &jobsv1.Group{Id: fmt.Sprintf("chord-%d", c), ResultArg: "results",
			Callback: &jobsv1.Task{Name: "total", Queue: "fan", Args: obj(t, map[string]any{"chord": fmt.Sprintf("chord-%d", c)})}}
		for i := 1; i <= members; i++ {
			g.Tasks = append(g.Tasks, &jobsv1.Task{Name: "part", Queue: "fan", Args: obj(t, map[string]any{"i": i}),
				MaxRetries: 20, RetryBackoff: durationpb.New(10 * time.Millisecond)})
		}
		if _, err := e.Replicas[c%2].Canvas.CreateGroup(ctx, &jobsv1.CreateGroupRequest{Group: g}); err != nil {
			t.Fatal(err)
		}
	}
	for c := range chords {
		id := fmt.Sprintf("chord-%d", c)
		cb := wait(t, e, id+"-callback")
		res := cb.Result.GetStructValue().AsMap()
		if cb.State != "succeeded" || res["sum"] != float64(want) || res["n"] != float64(members) || res["first"] != 1.0 || res["last"] != float64(members*members) {
			t.Errorf("%s callback: %s %v %s", id, cb.State, res, cb.Error)
		}
		if cb.Attempts != 1 {
			t.Errorf("%s callback: %d attempts", id, cb.Attempts)
		}
		g, err := e.Replicas[1].Canvas.GetGroup(ctx, &jobsv1.GetGroupRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		if g.State != "succeeded" || len(g.Tasks) != members || g.Callback.GetId() != id+"-callback" {
			t.Errorf("%s: %s %q, %d members", id, g.State, g.Error, len(g.Tasks))
		}
	}
	callbacks.Range(func(k, v any) bool {
		if n := v.(*atomic.Int32).Load(); n != 1 {
			t.Errorf("%s: callback ran %d times", k, n)
		}
		return true
	})
	n := 0
	callbacks.Range(func(any, any) bool { n++; return true })
	if n != chords {
		t.Errorf("%d chords called back, want %d", n, chords)
	}
}

// A chord whose member fails for good does not run its callback (as in
// Celery): the callback is cancelled with the reason and the chord fails.
func TestChordMemberFailureCancelsCallback(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	var called atomic.Int32
	runWorker(t, e.Replicas[0].Conn, e.Acme.Key, "q", 4, map[string]worker.Handler{
		"ok": func(ctx context.Context, task *worker.Task) (any, error) { return 1, nil },
		"bad": func(ctx context.Context, task *worker.Task) (any, error) {
			return nil, worker.Permanent(errors.New("boom"))
		},
		"done": func(ctx context.Context, task *worker.Task) (any, error) { called.Add(1); return nil, nil },
	})
	ctx := e.Acme.Ctx(context.Background())
	_, err := e.Replicas[0].Canvas.CreateGroup(ctx, &jobsv1.CreateGroupRequest{Group: &jobsv1.Group{Id: "g", Tasks: []*jobsv1.Task{
		{Name: "ok", Queue: "q"}, {Name: "bad", Queue: "q"}, {Name: "ok", Queue: "q"},
	}, Callback: &jobsv1.Task{Name: "done", Queue: "q"}}})
	if err != nil {
		t.Fatal(err)
	}
	cb := wait(t, e, "g-callback")
	if cb.State != "cancelled" || cb.Error != "chord stopped: member 2 (g-2) failed: boom" {
		t.Errorf("callback %s %q", cb.State, cb.Error)
	}
	g, err := e.Replicas[0].Canvas.GetGroup(ctx, &jobsv1.GetGroupRequest{Id: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if g.State != "failed" || g.Error != "member 2 (g-2) failed: boom" {
		t.Errorf("group %s %q", g.State, g.Error)
	}
	if got := []string{g.Tasks[0].State, g.Tasks[1].State, g.Tasks[2].State}; fmt.Sprint(got) != "[succeeded failed succeeded]" {
		t.Errorf("members %v", got)
	}
	if n := called.Load(); n != 0 {
		t.Errorf("callback ran %d times", n)
	}
}

// Cancelling a group cancels its pending members at once (they never run),
// tells the running one to stop, and cancels the callback.
func TestCancelGroup(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	var ran, callback atomic.Int32
	started := make(chan struct{}, 3)
	runWorker(t, e.Replicas[0].Conn, e.Acme.Key, "one", 1, map[string]worker.Handler{
		"block": func(ctx context.Context, task *worker.Task) (any, error) {
			ran.Add(1)
			started <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		},
		"after": func(ctx context.Context, task *worker.Task) (any, error) { callback.Add(1); return nil, nil },
	})
	ctx := e.Acme.Ctx(context.Background())
	_, err := e.Replicas[0].Canvas.CreateGroup(ctx, &jobsv1.CreateGroupRequest{Group: &jobsv1.Group{Id: "batch", Tasks: []*jobsv1.Task{
		{Name: "block", Queue: "one"}, {Name: "block", Queue: "one"}, {Name: "block", Queue: "one"},
	}, Callback: &jobsv1.Task{Name: "after", Queue: "one"}}})
	if err != nil {
		t.Fatal(err)
	}
	<-started // one member runs; with one slot the others wait
	g, err := e.Replicas[0].Canvas.CancelGroup(ctx, &jobsv1.CancelGroupRequest{Id: "batch"})
	if err != nil {
		t.Fatal(err)
	}
	if g.State != "cancelled" {
		t.Fatalf("group after cancel: %s", g.State)
	}
	pending, running := 0, 0
	for _, m := range g.Tasks {
		switch {
		case m.State == "cancelled" && m.Error == "group cancelled":
			pending++
		case m.State == "running" && m.CancelRequested:
			running++
		default:
			t.Errorf("member %s after cancel: %s %q", m.Id, m.State, m.Error)
		}
	}
	if pending != 2 || running != 1 || g.Callback.State != "cancelled" {
		t.Errorf("after cancel: %d cancelled, %d told to stop, callback %s", pending, running, g.Callback.State)
	}
	for _, m := range g.Tasks {
		if got := wait(t, e, m.Id); got.State != "cancelled" {
			t.Errorf("member %s ended %s", m.Id, got.State)
		}
	}
	// Every member and the callback have ended, so none can run later.
	if n := ran.Load(); n != 1 {
		t.Errorf("members ran %d times, want only the one running at the cancel", n)
	}
	if n := callback.Load(); n != 0 {
		t.Errorf("callback ran %d times", n)
	}
	if g, err = e.Replicas[0].Canvas.GetGroup(ctx, &jobsv1.GetGroupRequest{Id: "batch"}); err != nil || g.State != "cancelled" {
		t.Errorf("group: %v %v", g, err)
	}
}

// Bad canvases are refused with the field at fault.
func TestCanvasValidation(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	ctx := e.Acme.Ctx(context.Background())
	c := e.Replicas[0].Canvas
	for name, g := range map[string]*jobsv1.Group{
		"no tasks":              {},
		"member id":             {Tasks: []*jobsv1.Task{{Id: "x", Name: "a"}}},
		"unique key":            {Tasks: []*jobsv1.Task{{Name: "a", UniqueKey: "k"}}},
		"result arg, no chord":  {ResultArg: "r", Tasks: []*jobsv1.Task{{Name: "a"}}},
		"callback args not obj": {ResultArg: "r", Tasks: []*jobsv1.Task{{Name: "a"}}, Callback: &jobsv1.Task{Name: "b", Args: structpb.NewNumberValue(1)}},
		"bad member":            {Tasks: []*jobsv1.Task{{Name: ""}}},
	} {
		_, err := c.CreateGroup(ctx, &jobsv1.CreateGroupRequest{Group: g})
		wantCode(t, name, err, codes.InvalidArgument)
	}
	_, err := c.CreateChain(ctx, &jobsv1.CreateChainRequest{Chain: &jobsv1.Chain{Id: strings.Repeat("x", 101), Tasks: []*jobsv1.Task{{Name: "a"}}}})
	wantCode(t, "long id", err, codes.InvalidArgument)
	// A member id taken by a task outside the chain.
	if _, err := e.Replicas[0].Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: "taken-1", Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateChain(ctx, &jobsv1.CreateChainRequest{Chain: &jobsv1.Chain{Id: "taken", Tasks: []*jobsv1.Task{{Name: "a"}}}})
	wantCode(t, "member id taken", err, codes.AlreadyExists)
	_, err = c.GetGroup(ctx, &jobsv1.GetGroupRequest{Id: "taken"})
	wantCode(t, "no such group", err, codes.NotFound)
}
