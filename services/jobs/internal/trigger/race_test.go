package trigger_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/internal/trigger"
)

// One tenant deleting its last trigger on a pattern while another tenant
// creates a trigger on the same pattern must leave the pattern bound: the
// new trigger's events still arrive.
func TestDeleteRacingCreateKeepsBinding(t *testing.T) {
	t.Parallel()
	bodies := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
	}))
	defer srv.Close()
	e := jobstest.Start(t, jobstest.Options{})
	r := e.Replicas[0]
	const pattern = "app.race.*"
	code, acme := e.REST(t, e.Acme, "POST", "/v1/triggers", `{"eventType":"`+pattern+`","task":{"name":"http","args":{"url":"`+srv.URL+`","body":"acme"}}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, acme)
	}
	created := make(chan int, 1)
	// The other tenant's create runs in the window between the delete's
	// count update and its unbind (or is held off by it).
	trigger.SetBeforeUnbind(r.Jobs.Triggers, func() {
		go func() {
			code, _ := e.REST(t, e.Other, "POST", "/v1/triggers", `{"eventType":"`+pattern+`","task":{"name":"http","args":{"url":"`+srv.URL+`","body":"other"}}}`)
			created <- code
		}()
		select {
		case code := <-created:
			created <- code
		case <-time.After(3 * time.Second):
		}
	})
	if code, out := e.REST(t, e.Acme, "DELETE", "/v1/triggers/"+acme["id"].(string), ""); code != 200 {
		t.Fatalf("delete: %d %v", code, out)
	}
	select {
	case code := <-created:
		if code != 200 {
			t.Fatalf("other tenant's create: %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("other tenant's create did not finish")
	}
	msg, err := cloudevent.ToPublishing(&eventv1.Event{Id: "evt_1", Source: "app", Type: "race.x", Tenant: e.Other.Name,
		Time: timestamppb.Now(), DataContentType: "application/json", Data: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Jobs.Publisher.Publish(context.Background(), e.Config.EventsExchange, cloudevent.RoutingKey("app", "race.x"), msg); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-bodies:
		if b != "other" {
			t.Fatalf("ran %q", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the other tenant's trigger never saw its event: the pattern was unbound")
	}
}
