package jobs_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("%s: got %v, want %s", what, err, want)
	}
}

// The public contract of the built-in http task, through REST.
func TestHTTPTaskThroughREST(t *testing.T) {
	t.Parallel()
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(r.Method + " " + r.URL.Path + " " + r.Header.Get("X-Token") + " " + string(b))
		w.Write([]byte(`ok`))
	}))
	defer srv.Close()
	e := jobstest.Start(t, jobstest.Options{})

	code, task := e.REST(t, e.Acme, "POST", "/v1/tasks",
		`{"name":"http","args":{"url":"`+srv.URL+`/x","headers":{"X-Token":"t1"},"body":"hello"},"maxRetries":1,"hardTimeLimit":"2s"}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, task)
	}
	id := task["id"].(string)
	// A create answers the task as read back after storing it; the pump
	// may already have handed a due task to the runner by then (seen on a
	// loaded host), so it may be running.
	if s := task["state"]; s != "pending" && s != "running" {
		t.Errorf("new task state %v, want pending (or running)", s)
	}
	e.WaitState(t, e.Acme, id, "succeeded", 20*time.Second)
	if g, _ := got.Load().(string); g != "POST /x t1 hello" {
		t.Errorf("server saw %q", g)
	}
	code, task = e.REST(t, e.Acme, "GET", "/v1/tasks/"+id, "")
	if code != 200 || task["state"] != "succeeded" || task["attempts"] != float64(1) {
		t.Fatalf("get: %d %v", code, task)
	}
	res := task["result"].(map[string]any)
	if res["status"] != float64(200) || res["body"] != "ok" {
		t.Errorf("result %v", res)
	}
	if log := task["attemptLog"].([]any); len(log) != 1 || log[0].(map[string]any)["outcome"] != "succeeded" {
		t.Errorf("attempt log %v", log)
	}
	// The id is the idempotency key: the same id again is the same task.
	code, again := e.REST(t, e.Acme, "POST", "/v1/tasks", `{"id":"`+id+`","name":"http","args":{"url":"`+srv.URL+`/y"}}`)
	if code != 200 || again["state"] != "succeeded" {
		t.Errorf("re-create: %d %v", code, again)
	}
	// Another tenant does not see it.
	if code, _ := e.REST(t, e.Other, "GET", "/v1/tasks/"+id, ""); code != 404 {
		t.Errorf("other tenant: %d, want 404", code)
	}
	if code, _ := e.REST(t, jobstest.Tenant{}, "GET", "/v1/tasks/"+id, ""); code != 401 {
		t.Errorf("no key: %d, want 401", code)
	}
	// Wait returns at once for an ended task.
	code, waited := e.REST(t, e.Acme, "GET", "/v1/tasks/"+id+":wait?timeout=5s", "")
	if code != 200 || waited["state"] != "succeeded" {
		t.Errorf("wait: %d %v", code, waited)
	}
}

func TestHTTPTaskRetriesThenFailsAndCanBeRetried(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	e := jobstest.Start(t, jobstest.Options{})
	c := e.Replicas[0].Tasks
	ctx := e.Acme.Ctx(context.Background())
	args, _ := structpb.NewValue(map[string]any{"url": srv.URL})
	task, err := c.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{
		Name: "http", Args: args, MaxRetries: 1, RetryBackoff: durationpb.New(50 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	failed := e.WaitState(t, e.Acme, task.Id, "failed", 20*time.Second)
	if failed.Attempts != 2 || len(failed.AttemptLog) != 2 || !strings.Contains(failed.Error, "HTTP 500") {
		t.Fatalf("failed task: attempts %d, log %v, error %q", failed.Attempts, failed.AttemptLog, failed.Error)
	}
	for _, a := range failed.AttemptLog {
		if a.Outcome != "failed" || !strings.Contains(a.Error, "HTTP 500: broken") {
			t.Errorf("attempt %v", a)
		}
	}
	list, err := c.ListTasks(ctx, &jobsv1.ListTasksRequest{State: "failed"})
	if err != nil || len(list.Tasks) != 1 || list.Tasks[0].Id != task.Id {
		t.Fatalf("list failed: %v %v", list, err)
	}
	q, err := e.Replicas[0].Queues.ListQueues(ctx, &jobsv1.ListQueuesRequest{})
	if err != nil || len(q.Queues) != 1 || q.Queues[0].Dead != 1 {
		t.Fatalf("queues: %v %v", q, err)
	}
	if _, err := c.RetryTask(ctx, &jobsv1.RetryTaskRequest{Id: task.Id}); err != nil {
		t.Fatal(err)
	}
	done := e.WaitState(t, e.Acme, task.Id, "succeeded", 20*time.Second)
	if done.Attempts != 3 {
		t.Errorf("attempts %d, want 3", done.Attempts)
	}
	_, err = c.RetryTask(ctx, &jobsv1.RetryTaskRequest{Id: task.Id})
	wantCode(t, "retry of a succeeded task", err, codes.FailedPrecondition)
}

// Invariant 7 for the built-in task: a server that never answers cannot
// hold the task past its hard limit.
func TestHTTPTaskHardLimitOnHangingServer(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	e := jobstest.Start(t, jobstest.Options{})
	start := time.Now()
	code, task := e.REST(t, e.Acme, "POST", "/v1/tasks",
		`{"name":"http","args":{"url":"`+srv.URL+`"},"maxRetries":-1,"hardTimeLimit":"1s"}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, task)
	}
	failed := e.WaitState(t, e.Acme, task["id"].(string), "failed", 20*time.Second)
	if !strings.Contains(failed.Error, "hard time limit") {
		t.Errorf("error %q, want the hard time limit", failed.Error)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("failed after %s, before its hard limit", d)
	}
}

// The built-in http task's soft limit ends the request; it used to run on
// to the hard limit.
func TestHTTPTaskSoftLimitEndsRequest(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	e := jobstest.Start(t, jobstest.Options{})
	code, task := e.REST(t, e.Acme, "POST", "/v1/tasks",
		`{"name":"http","args":{"url":"`+srv.URL+`"},"maxRetries":-1,"softTimeLimit":"1s","hardTimeLimit":"60s"}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, task)
	}
	failed := e.WaitState(t, e.Acme, task["id"].(string), "failed", 30*time.Second)
	if !strings.Contains(failed.Error, "soft time limit") {
		t.Errorf("error %q, want the soft time limit", failed.Error)
	}
}

func TestCancelPendingTaskNeverRuns(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	e := jobstest.Start(t, jobstest.Options{})
	c := e.Replicas[0].Tasks
	ctx := e.Acme.Ctx(context.Background())
	args, _ := structpb.NewValue(map[string]any{"url": srv.URL})
	task, err := c.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{
		Name: "http", Args: args, Countdown: durationpb.New(time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.CancelTask(ctx, &jobsv1.CancelTaskRequest{Id: task.Id})
	if err != nil || got.State != "cancelled" {
		t.Fatalf("cancel: %v %v", got, err)
	}
	// A control task enqueued with the same countdown after the cancel runs,
	// so by the time it has, the cancelled one would have too.
	control, err := c.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{
		Name: "http", Args: args, Countdown: durationpb.New(time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	e.WaitState(t, e.Acme, control.Id, "succeeded", 20*time.Second)
	if n := calls.Load(); n != 1 {
		t.Errorf("server called %d times, want 1 (the control task only)", n)
	}
	after, _ := c.GetTask(ctx, &jobsv1.GetTaskRequest{Id: task.Id})
	if after.State != "cancelled" || after.Attempts != 0 {
		t.Errorf("cancelled task now %s with %d attempts", after.State, after.Attempts)
	}
	_, err = c.CancelTask(ctx, &jobsv1.CancelTaskRequest{Id: control.Id})
	wantCode(t, "cancel of a succeeded task", err, codes.FailedPrecondition)
}

func TestBadInputs(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{AllowCIDRs: "10.9.0.0/16"})
	for _, body := range []string{
		`{}`,
		`{"name":"http"}`,
		`{"name":"http","args":{"url":"http://127.0.0.1:9/x"}}`,
		`{"name":"http","args":{"url":"ftp://example.com/"}}`,
		`{"name":"http","args":{"url":"http://10.9.0.1/","method":"GE T"}}`,
		`{"name":"x","softTimeLimit":"10s","hardTimeLimit":"5s"}`,
		`{"name":"x","hardTimeLimit":"48h"}`,
		`{"name":"x","queue":"a b"}`,
		`{"name":"x","id":"a/b"}`,
		`{"name":"x","countdown":"1s","eta":"2030-01-01T00:00:00Z"}`,
		`{"name":"x","callbackUrl":"http://169.254.169.254/"}`,
		`{"name":"x","maxRetries":1000}`,
	} {
		code, out := e.REST(t, e.Acme, "POST", "/v1/tasks", body)
		if code != 400 {
			t.Errorf("%s: %d %v, want 400", body, code, out)
		}
	}
	if code, _ := e.REST(t, e.Acme, "GET", "/v1/tasks?state=done", ""); code != 400 {
		t.Errorf("bad state filter: %d", code)
	}
	if code, _ := e.REST(t, e.Acme, "GET", "/v1/tasks?pageToken=zzz", ""); code != 400 {
		t.Errorf("bad page token: %d", code)
	}
	if code, _ := e.REST(t, e.Acme, "GET", "/v1/tasks/nope", ""); code != 404 {
		t.Errorf("missing task: %d", code)
	}
}

// A paused queue starts nothing; its tasks wait parked and run on resume.
func TestPauseAndResumeQueue(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	e := jobstest.Start(t, jobstest.Options{})
	if code, q := e.REST(t, e.Acme, "POST", "/v1/queues/bulk:pause", `{}`); code != 200 || q["paused"] != true {
		t.Fatalf("pause: %d %v", code, q)
	}
	code, task := e.REST(t, e.Acme, "POST", "/v1/tasks", `{"name":"http","queue":"bulk","args":{"url":"`+srv.URL+`"}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, task)
	}
	jobstest.WaitFor(t, 20*time.Second, "the task to be parked", func() bool {
		_, l := e.REST(t, e.Acme, "GET", "/v1/queues", "")
		for _, q := range l["queues"].([]any) {
			if m := q.(map[string]any); m["name"] == "bulk" && m["parked"] == "1" {
				return true
			}
		}
		return false
	})
	if n := calls.Load(); n != 0 {
		t.Fatalf("a paused queue ran %d tasks", n)
	}
	if code, q := e.REST(t, e.Acme, "POST", "/v1/queues/bulk:resume", `{}`); code != 200 || q["paused"] == true {
		t.Fatalf("resume: %d %v", code, q)
	}
	e.WaitState(t, e.Acme, task["id"].(string), "succeeded", 20*time.Second)
	if code, _ := e.REST(t, e.Acme, "POST", "/v1/queues/a%20b:pause", `{}`); code != 400 {
		t.Errorf("bad queue name: %d", code)
	}
}

func TestBatchCreate(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	code, out := e.REST(t, e.Acme, "POST", "/v1/tasks:batchCreate",
		`{"requests":[{"task":{"id":"b1","name":"x"}},{"task":{"id":"b2","name":"y","queue":"other"}}]}`)
	if code != 200 || len(out["tasks"].([]any)) != 2 {
		t.Fatalf("batch: %d %v", code, out)
	}
	code, out = e.REST(t, e.Acme, "POST", "/v1/tasks:batchCreate",
		`{"requests":[{"task":{"id":"b3","name":"x"}},{"task":{"name":"x","queue":"bad queue"}}]}`)
	if code != 400 || !strings.Contains(out["message"].(string), "requests[1]") {
		t.Fatalf("invalid batch: %d %v", code, out)
	}
	if code, _ := e.REST(t, e.Acme, "GET", "/v1/tasks/b3", ""); code != 404 {
		t.Errorf("a task of an invalid batch was enqueued: %d", code)
	}
}

// A cancel is kept in Redis: a replica that starts after it (here: the
// only one left) never runs the task.
func TestCancelSurvivesRestart(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	e := jobstest.Start(t, jobstest.Options{Replicas: 2})
	ctx := e.Acme.Ctx(context.Background())
	args, _ := structpb.NewValue(map[string]any{"url": srv.URL})
	task, err := e.Replicas[1].Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{
		Name: "http", Args: args, Countdown: durationpb.New(1500 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Replicas[1].Tasks.CancelTask(ctx, &jobsv1.CancelTaskRequest{Id: task.Id}); err != nil {
		t.Fatal(err)
	}
	e.Replicas[1].Stop()
	control, err := e.Replicas[0].Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{
		Name: "http", Args: args, Countdown: durationpb.New(1500 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	e.WaitState(t, e.Acme, control.Id, "succeeded", 20*time.Second)
	if n := calls.Load(); n != 1 {
		t.Errorf("server called %d times, want 1", n)
	}
}
