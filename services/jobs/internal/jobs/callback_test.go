package jobs_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
)

// A task that ends publishes hookyard.jobs.task.<state> and POSTs its callback,
// signed as Standard Webhooks, retrying a failing receiver.
func TestCompletionEventAndSignedCallback(t *testing.T) {
	t.Parallel()
	secret, err := sign.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := sign.ParseSecret(secret)
	type call struct {
		header http.Header
		body   []byte
	}
	calls := make(chan call, 10)
	failures := 1
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		calls <- call{r.Header.Clone(), b}
		if failures > 0 {
			failures--
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer cb.Close()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("pong")) }))
	defer target.Close()

	e := jobstest.Start(t, jobstest.Options{})
	events := e.Events(t, "hookyard.jobs.task.#")
	code, task := e.REST(t, e.Acme, "POST", "/v1/tasks",
		`{"name":"http","args":{"url":"`+target.URL+`"},"callbackUrl":"`+cb.URL+`/done","callbackSecret":"`+secret+`"}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, task)
	}
	if v, _ := task["callbackSecret"].(string); v != "" {
		t.Error("the callback secret is returned")
	}
	id := task["id"].(string)

	select {
	case d := <-events:
		ev, err := cloudevent.FromDelivery(d)
		if err != nil {
			t.Fatal(err)
		}
		if d.RoutingKey != "hookyard.jobs.task.succeeded" || ev.Subject != id || ev.Tenant != e.Acme.Name {
			t.Errorf("event %s %v", d.RoutingKey, ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no completion event")
	}

	var last call
	for i := range 2 { // the first answer is 503, the retry succeeds
		select {
		case last = <-calls:
		case <-time.After(30 * time.Second):
			t.Fatalf("callback %d did not come", i+1)
		}
	}
	id1 := last.header.Get(sign.HeaderID)
	ts := last.header.Get(sign.HeaderTimestamp)
	var unix int64
	if err := json.Unmarshal([]byte(ts), &unix); err != nil {
		t.Fatalf("timestamp %q", ts)
	}
	want := sign.Sign([][]byte{key}, id1, time.Unix(unix, 0), last.body)
	if got := last.header.Get(sign.HeaderSignature); got != want {
		t.Errorf("signature %q, want %q", got, want)
	}
	var body map[string]any
	if err := json.Unmarshal(last.body, &body); err != nil || body["state"] != "succeeded" || body["id"] != id {
		t.Errorf("callback body %s", last.body)
	}
	jobstest.WaitFor(t, 10*time.Second, "callback state delivered", func() bool {
		got, err := e.Replicas[0].Tasks.GetTask(e.Acme.Ctx(context.Background()), &jobsv1.GetTaskRequest{Id: id})
		return err == nil && got.CallbackState == "delivered" && got.CallbackSecret == ""
	})
}
