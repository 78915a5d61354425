package jobs_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/proctest"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// TestKillReplicaMidTask runs the real binary, SIGKILLs it while it runs
// a built-in http task, and starts it again: the killed attempt's lease
// runs out, the attempt is failed as such, and the task runs again and
// succeeds. No task is lost with the process.
func TestKillReplicaMidTask(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "../../cmd/jobs")
	var calls atomic.Int32
	started := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			started <- struct{}{}
			<-r.Context().Done() // hangs until the process holding it dies
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	// The in-process replica only provides keys, queues, cleanup and an
	// enqueue; it is stopped so the subprocess does all the work.
	e := jobstest.Start(t, jobstest.Options{})
	j := e.Replicas[0].Jobs
	e.Replicas[0].Stop()
	args, _ := structpb.NewValue(map[string]any{"url": srv.URL})
	task, err := j.Tasks.Enqueue(context.Background(), e.Acme.Name, &jobsv1.Task{Name: "http", Args: args,
		MaxRetries: 3, HardTimeLimit: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}

	run := func() *proctest.Proc {
		return proctest.Start(t, bin,
			"HOOKYARD_AMQP_URL="+rabbittest.URL(), "HOOKYARD_REDIS_URL="+jobstest.RedisURL(),
			"HOOKYARD_HTTP_ADDR=127.0.0.1:0", "HOOKYARD_GRPC_ADDR=127.0.0.1:0",
			"HOOKYARD_API_KEYS="+e.Acme.Name+":"+e.Acme.Key, "HOOKYARD_ALLOW_CIDRS=127.0.0.0/8",
			"HOOKYARD_LOG_LEVEL=warn", "HOOKYARD_JOBS_HEARTBEAT=300ms",
			"HOOKYARD_JOBS_KEY_PREFIX="+e.Config.KeyPrefix, "HOOKYARD_JOBS_QUEUE_PREFIX="+e.Config.QueuePrefix,
		)
	}
	p := run()
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		t.Fatal("the subprocess never ran the task")
	}
	p.Kill()
	got, err := j.Store.Get(context.Background(), e.Acme.Name, task.Id)
	if err != nil || got.State != store.Running {
		t.Fatalf("after the kill: %+v %v, want running", got, err)
	}

	run()
	jobstest.WaitFor(t, 60*time.Second, "the task to succeed after the restart", func() bool {
		got, err = j.Store.Get(context.Background(), e.Acme.Name, task.Id)
		return err == nil && store.Ended(got.State)
	})
	if got.State != store.Succeeded || got.Attempts != 2 || len(got.Log) != 2 {
		t.Fatalf("task ended %s after %d attempts, log %+v; want succeeded on the second", got.State, got.Attempts, got.Log)
	}
	if !strings.Contains(got.Log[0].Error, "lease expired") {
		t.Errorf("first attempt ended with %q, want its lease expired", got.Log[0].Error)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the URL was called %d times, want 2", n)
	}
}

// TestKillReplicaMidChord SIGKILLs the replica running a chord's members
// (built-in http tasks) while two of them are in flight and two have
// ended, and starts it again: the killed attempts run again, and the
// callback runs exactly once when the last member succeeds.
func TestKillReplicaMidChord(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "../../cmd/jobs")
	var hung, callbacks atomic.Int32
	started := make(chan struct{}, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/callback":
			callbacks.Add(1)
		case strings.HasPrefix(r.URL.Path, "/slow") && hung.Add(1) <= 2:
			started <- struct{}{}
			<-r.Context().Done() // hangs until the process holding it dies
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	e := jobstest.Start(t, jobstest.Options{})
	j := e.Replicas[0].Jobs
	e.Replicas[0].Stop()
	member := func(path string) *jobsv1.Task {
		args, _ := structpb.NewValue(map[string]any{"url": srv.URL + path})
		return &jobsv1.Task{Name: "http", Args: args, MaxRetries: 3, HardTimeLimit: durationpb.New(time.Minute)}
	}
	ctx := auth.WithTenant(context.Background(), e.Acme.Name)
	_, err := j.Canvas.CreateGroup(ctx, &jobsv1.CreateGroupRequest{Group: &jobsv1.Group{Id: "chord", ResultArg: "results",
		Tasks:    []*jobsv1.Task{member("/fast/1"), member("/fast/2"), member("/slow/3"), member("/slow/4")},
		Callback: member("/callback")}})
	if err != nil {
		t.Fatal(err)
	}

	run := func() *proctest.Proc {
		return proctest.Start(t, bin,
			"HOOKYARD_AMQP_URL="+rabbittest.URL(), "HOOKYARD_REDIS_URL="+jobstest.RedisURL(),
			"HOOKYARD_HTTP_ADDR=127.0.0.1:0", "HOOKYARD_GRPC_ADDR=127.0.0.1:0",
			"HOOKYARD_API_KEYS="+e.Acme.Name+":"+e.Acme.Key, "HOOKYARD_ALLOW_CIDRS=127.0.0.0/8",
			"HOOKYARD_LOG_LEVEL=warn", "HOOKYARD_JOBS_HEARTBEAT=300ms",
			"HOOKYARD_JOBS_KEY_PREFIX="+e.Config.KeyPrefix, "HOOKYARD_JOBS_QUEUE_PREFIX="+e.Config.QueuePrefix,
		)
	}
	p := run()
	for range 2 {
		select {
		case <-started:
		case <-time.After(60 * time.Second):
			t.Fatal("the subprocess never ran the slow members")
		}
	}
	jobstest.WaitFor(t, 60*time.Second, "the fast members to succeed", func() bool {
		g, err := j.Store.GetCanvas(context.Background(), e.Acme.Name, "chord", store.Group)
		return err == nil && g.Members[0].State == store.Succeeded && g.Members[1].State == store.Succeeded
	})
	p.Kill()
	g, err := j.Store.GetCanvas(context.Background(), e.Acme.Name, "chord", store.Group)
	if err != nil || g.State != store.Running || g.Callback.State != store.Pending {
		t.Fatalf("after the kill: %+v %v, want running with the callback pending", g, err)
	}

	run()
	jobstest.WaitFor(t, 60*time.Second, "the chord to end after the restart", func() bool {
		g, err = j.Store.GetCanvas(context.Background(), e.Acme.Name, "chord", store.Group)
		return err == nil && store.Ended(g.State)
	})
	if g.State != store.Succeeded || g.Callback.State != store.Succeeded || g.Callback.Attempts != 1 {
		t.Fatalf("chord ended %s (%s), callback %s after %d attempts", g.State, g.Error, g.Callback.State, g.Callback.Attempts)
	}
	for _, m := range g.Members[2:] {
		if m.State != store.Succeeded || m.Attempts != 2 {
			t.Errorf("slow member %s: %s after %d attempts, want succeeded on the second", m.ID, m.State, m.Attempts)
		}
	}
	if n := callbacks.Load(); n != 1 {
		t.Errorf("the callback URL was called %d times, want 1", n)
	}
}
