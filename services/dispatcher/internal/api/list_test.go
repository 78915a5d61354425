package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"google.golang.org/grpc/codes"

	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
)

func TestListMessagesShowsTheTenantsDeliveriesWithTheirLastResponse(t *testing.T) {
	e := start(t)
	e.record(t, e.acme.name, "m_old", "ep_1")
	e.record(t, e.globex.name, "m_globex", "ep_2")
	// Recorded a second later than m_old, so the order does not depend on
	// the clock's resolution.
	ctx := context.Background()
	if _, err := e.store.Record(ctx, e.acme.name, &message.Message{ID: "m_new", Source: e.id, Type: "order.created",
		CreateTime: time.Now().Add(time.Second), Body: []byte(`{"n":2}`)}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.InitDeliveries(ctx, e.acme.name, "m_new", []string{"ep_1"}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.AddAttempt(ctx, e.acme.name, "m_new", &dispatcherv1.Attempt{EndpointId: "ep_1", Number: 1, StatusCode: 503}); err != nil {
		t.Fatal(err)
	}

	out := e.restOK(t, "GET", "/v1/messages?pageSize=1", e.acme.key, "")
	ms, _ := out["messages"].([]any)
	if tok, _ := out["nextPageToken"].(string); len(ms) != 1 || tok == "" {
		t.Fatalf("first page %v, want one message and a token", out)
	}
	m := ms[0].(map[string]any)
	if m["id"] != "m_new" || m["data"] != nil {
		t.Errorf("newest message %v, want m_new without data", m)
	}
	ds, _ := m["deliveries"].([]any)
	if len(ds) != 1 {
		t.Fatalf("deliveries %v", m["deliveries"])
	}
	d := ds[0].(map[string]any)
	last, _ := d["lastAttempt"].(map[string]any)
	if d["endpointId"] != "ep_1" || d["status"] != "pending" || last["statusCode"] != float64(503) {
		t.Errorf("delivery %v, want ep_1 pending with its last attempt's 503", d)
	}
	rest := e.restOK(t, "GET", "/v1/messages?pageSize=1&pageToken="+out["nextPageToken"].(string), e.acme.key, "")
	if ms, _ := rest["messages"].([]any); len(ms) != 1 || ms[0].(map[string]any)["id"] != "m_old" || rest["nextPageToken"] != "" {
		t.Errorf("second page %v, want m_old alone", rest)
	}

	got, err := e.msgs.ListMessages(as(e.globex.key), &dispatcherv1.ListMessagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetMessages()) != 1 || got.GetMessages()[0].GetId() != "m_globex" {
		t.Errorf("globex lists %v, want only its own message", got.GetMessages())
	}
	for _, key := range []string{"", "not-a-known-key"} {
		_, err := e.msgs.ListMessages(as(key), &dispatcherv1.ListMessagesRequest{})
		wantCode(t, "list messages", err, codes.Unauthenticated)
		if code, body := e.rest(t, "GET", "/v1/messages", key, ""); code != http.StatusUnauthorized {
			t.Errorf("GET /v1/messages with key %q: %d %v, want 401", key, code, body)
		}
	}
	_, err = e.msgs.ListMessages(as(e.acme.key), &dispatcherv1.ListMessagesRequest{PageToken: "not-a-token"})
	wantCode(t, "bad token", err, codes.InvalidArgument)
}
