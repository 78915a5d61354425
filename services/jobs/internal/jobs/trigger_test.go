package jobs_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/topic"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/internal/trigger"
)

// A tenant's event matching a trigger enqueues its task once, with
// arguments taken from the event; another tenant's event does not.
func TestTriggerRunsTaskFromEvent(t *testing.T) {
	t.Parallel()
	bodies := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
	}))
	defer srv.Close()
	e := jobstest.Start(t, jobstest.Options{})
	r := e.Replicas[0]
	code, tr := e.REST(t, e.Acme, "POST", "/v1/triggers",
		`{"eventType":"stripe.payment_intent.*","task":{"name":"http","args":{"url":"`+srv.URL+`"}},"argsFrom":{"body":"/data/object/id"}}`)
	if code != 200 {
		t.Fatalf("create trigger: %d %v", code, tr)
	}
	publish := func(tenant, id, typ, data string) {
		msg, err := cloudevent.ToPublishing(&eventv1.Event{Id: id, Source: "stripe", Type: typ, Tenant: tenant,
			Time: timestamppb.Now(), DataContentType: "application/json", Data: []byte(data)})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Jobs.Publisher.Publish(context.Background(), e.Config.EventsExchange, cloudevent.RoutingKey("stripe", typ), msg); err != nil {
			t.Fatal(err)
		}
	}
	publish(e.Other.Name, "evt_0", "payment_intent.succeeded", `{"data":{"object":{"id":"pi_other"}}}`)
	publish(e.Acme.Name, "evt_1", "payment_intent.created", `{"data":{"object":{"id":"pi_1"}}}`)
	publish(e.Acme.Name, "evt_1", "payment_intent.created", `{"data":{"object":{"id":"pi_1"}}}`) // duplicate
	publish(e.Acme.Name, "evt_2", "charge.succeeded", `{"data":{"object":{"id":"ch_1"}}}`)

	select {
	case b := <-bodies:
		if b != "pi_1" {
			t.Fatalf("task body %q, want pi_1", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the trigger's task did not run")
	}
	id := trigger.TaskID(tr["id"].(string), "evt_1")
	e.WaitState(t, e.Acme, id, "succeeded", 20*time.Second)
	// Nothing else runs: give stragglers the time the first one took.
	select {
	case b := <-bodies:
		t.Fatalf("another task ran with %q", b)
	case <-time.After(2 * time.Second):
	}
	l, err := r.Tasks.ListTasks(e.Acme.Ctx(context.Background()), &jobsv1.ListTasksRequest{})
	if err != nil || len(l.Tasks) != 1 {
		t.Fatalf("tasks %v %v", l, err)
	}
	if code, _ := e.REST(t, e.Other, "GET", "/v1/triggers/"+tr["id"].(string), ""); code != 404 {
		t.Errorf("other tenant: %d", code)
	}
	if code, _ := e.REST(t, e.Acme, "DELETE", "/v1/triggers/"+tr["id"].(string), ""); code != 200 {
		t.Errorf("delete: %d", code)
	}
	for _, body := range []string{
		`{"eventType":"a..b","task":{"name":"x"}}`,
		`{"eventType":"a.b"}`,
		`{"eventType":"a.b","task":{"name":"x","id":"fixed"}}`,
		`{"eventType":"a.b","task":{"name":"x","args":[1]},"argsFrom":{"a":"/b"}}`,
		`{"eventType":"a.b","task":{"name":"x"},"argsFrom":{"a":"b"}}`,
	} {
		if code, out := e.REST(t, e.Acme, "POST", "/v1/triggers", body); code != 400 {
			t.Errorf("%s: %d %v", body, code, out)
		}
	}
}

// A trigger on "#" sees every event of its tenant, jobs' own completion
// events included; if those fired it, each task's end would enqueue the
// next, forever.
func TestTriggerIgnoresJobsOwnEvents(t *testing.T) {
	t.Parallel()
	bodies := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
	}))
	defer srv.Close()
	e := jobstest.Start(t, jobstest.Options{})
	r := e.Replicas[0]
	code, tr := e.REST(t, e.Acme, "POST", "/v1/triggers",
		`{"eventType":"#","task":{"name":"http","args":{"url":"`+srv.URL+`","body":"x"}}}`)
	if code != 200 {
		t.Fatalf("create trigger: %d %v", code, tr)
	}
	msg, err := cloudevent.ToPublishing(&eventv1.Event{Id: "evt_1", Source: "app", Type: "order.paid", Tenant: e.Acme.Name,
		Time: timestamppb.Now(), DataContentType: "application/json", Data: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Jobs.Publisher.Publish(context.Background(), e.Config.EventsExchange, cloudevent.RoutingKey("app", "order.paid"), msg); err != nil {
		t.Fatal(err)
	}
	e.WaitState(t, e.Acme, trigger.TaskID(tr["id"].(string), "evt_1"), "succeeded", 20*time.Second)
	<-bodies
	select {
	case <-bodies:
		t.Fatal("a completion event fired the trigger again")
	case <-time.After(5 * time.Second):
	}
}

func TestTopicMatchAndPointer(t *testing.T) {
	for _, c := range []struct {
		p, k string
		ok   bool
	}{
		{"stripe.#", "stripe.invoice.paid", true}, {"#", "a", true}, {"*.invoice.paid", "stripe.invoice.paid", true},
		{"stripe.*", "stripe.invoice.paid", false}, {"a.#.z", "a.z", true}, {"a.#.z", "a.b.c.z", true}, {"a.b", "a.b.c", false},
	} {
		if got := topic.Match(c.p, c.k); got != c.ok {
			t.Errorf("Match(%q, %q) = %v", c.p, c.k, got)
		}
	}
	doc := map[string]any{"a": []any{map[string]any{"b/c": "x", "m~n": 2.0}}}
	if v, ok := trigger.Pointer(doc, "/a/0/b~1c"); !ok || v != "x" {
		t.Errorf("pointer: %v %v", v, ok)
	}
	if v, ok := trigger.Pointer(doc, "/a/0/m~0n"); !ok || v != 2.0 {
		t.Errorf("pointer: %v %v", v, ok)
	}
	if _, ok := trigger.Pointer(doc, "/a/1"); ok {
		t.Error("out of range")
	}
}
