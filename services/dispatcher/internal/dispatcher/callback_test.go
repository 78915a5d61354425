package dispatcher

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/sign"
)

const testServiceKey = "service-key-for-tests"

func serviceCtx(key string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+key))
}

// A callback handed over by another service is delivered like any
// delivery: signed with its own secret, retried on the schedule, then
// dead-lettered, listed and resendable through the tenant's message API,
// and its target stays out of the endpoint API.
func TestCallbackRetriesDeadLettersAndResends(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "127.0.0.0/8", func(c *Config) {
		c.ServiceKey = testServiceKey
		c.RetrySchedule = "100ms,200ms"
	})
	secret, err := sign.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := sign.ParseSecret(secret)
	var ok atomic.Bool
	var hits, good atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hits.Add(1)
		unix, _ := strconv.ParseInt(r.Header.Get(sign.HeaderTimestamp), 10, 64)
		if r.Header.Get(sign.HeaderID) == "t1.failed.3" &&
			r.Header.Get(sign.HeaderSignature) == sign.Sign([][]byte{key}, "t1.failed.3", time.Unix(unix, 0), body) &&
			string(body) == `{"id":"t1"}` {
			good.Add(1)
		}
		if !ok.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()

	req := &dispatcherv1.SendCallbackRequest{
		Tenant: h.tenant, Url: srv.URL + "/done", Secret: secret, MessageId: "t1.failed.3",
		Source: "hookyard", Type: "jobs.task.failed", Data: []byte(`{"id":"t1"}`),
	}
	if _, err := h.d.Callbacks.SendCallback(serviceCtx("wrong-key"), req); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong service key: %v", err)
	}
	keys, err := auth.ParseKeys(h.tenant + ":tenant-key-1")
	if err != nil {
		t.Fatal(err)
	}
	h.d.Callbacks.TenantKeys = keys
	if _, err := h.d.Callbacks.SendCallback(serviceCtx("tenant-key-1"), req); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a tenant's key: %v, want PermissionDenied", err)
	}
	res, err := h.d.Callbacks.SendCallback(serviceCtx(testServiceKey), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetMessageId() != "t1.failed.3" || res.GetEndpointId() == "" {
		t.Fatalf("response %v", res)
	}
	ep := res.GetEndpointId()
	waitFor(t, 30*time.Second, "a dead letter", func() bool { return h.deadLetters()["t1.failed.3"] != nil })
	dl := h.deadLetters()["t1.failed.3"]
	if dl.GetEndpointId() != ep || dl.GetLastAttempt().GetStatusCode() != 500 {
		t.Errorf("dead letter %v", dl)
	}
	atts, err := h.d.Messages.ListMessageAttempts(h.ctx(), &dispatcherv1.ListMessageAttemptsRequest{Id: "t1.failed.3"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(atts.GetAttempts()); n != 3 || good.Load() != 3 {
		t.Errorf("%d attempts recorded, %d correctly signed requests; want 3 and 3", n, good.Load())
	}
	if h.deliveryStatus("t1.failed.3", ep) != "failed" {
		t.Errorf("delivery %v", h.message("t1.failed.3"))
	}

	// Hidden from the endpoint API.
	if _, err := h.d.Endpoints.GetEndpoint(h.ctx(), &dispatcherv1.GetEndpointRequest{Id: ep}); status.Code(err) != codes.NotFound {
		t.Errorf("GetEndpoint of the callback target: %v", err)
	}
	if _, err := h.d.Endpoints.DeleteEndpoint(h.ctx(), &dispatcherv1.DeleteEndpointRequest{Id: ep}); status.Code(err) != codes.NotFound {
		t.Errorf("DeleteEndpoint of the callback target: %v", err)
	}
	list, err := h.d.Endpoints.ListEndpoints(h.ctx(), &dispatcherv1.ListEndpointsRequest{})
	if err != nil || len(list.GetEndpoints()) != 0 {
		t.Errorf("ListEndpoints: %v %v", list, err)
	}

	// Resent once the subscriber is back.
	ok.Store(true)
	if _, err := h.d.Messages.ResendMessage(h.ctx(), &dispatcherv1.ResendMessageRequest{Id: "t1.failed.3", EndpointId: ep}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the resent callback delivered", func() bool { return h.deliveryStatus("t1.failed.3", ep) == "delivered" })

	// A second hand-over of the same message queues nothing: the
	// delivery stays delivered, not pending again.
	before := hits.Load()
	again, err := h.d.Callbacks.SendCallback(serviceCtx(testServiceKey), req)
	if err != nil || again.GetEndpointId() != ep {
		t.Fatalf("second hand-over: %v %v", again, err)
	}
	m := h.message("t1.failed.3")
	if len(m.GetDeliveries()) != 1 || m.GetDeliveries()[0].GetStatus() != "delivered" || m.GetDeliveries()[0].GetAttempts() != 4 {
		t.Errorf("after a second hand-over: %v", m.GetDeliveries())
	}
	if hits.Load() != before {
		t.Errorf("a second hand-over delivered again")
	}
}

// A callback target answering 410 is dead-lettered, not disabled: nobody
// could recover it, and the tenant's other callbacks to it still go.
func TestCallbackGoneIsDeadLetteredNotDisabled(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "127.0.0.0/8", func(c *Config) { c.ServiceKey = testServiceKey })
	secret, _ := sign.NewSecret()
	var gone atomic.Bool
	gone.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gone.Load() {
			w.WriteHeader(http.StatusGone)
		}
	}))
	defer srv.Close()
	send := func(id string) string {
		res, err := h.d.Callbacks.SendCallback(serviceCtx(testServiceKey), &dispatcherv1.SendCallbackRequest{
			Tenant: h.tenant, Url: srv.URL, Secret: secret, MessageId: id, Source: "hookyard", Type: "jobs.task.succeeded", Data: []byte(`{}`),
		})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetEndpointId()
	}
	ep := send("m1")
	waitFor(t, 30*time.Second, "a dead letter", func() bool { return h.deadLetters()["m1"] != nil })
	gone.Store(false)
	if ep2 := send("m2"); ep2 != ep {
		t.Errorf("one url and secret got two targets: %s, %s", ep, ep2)
	}
	waitFor(t, 30*time.Second, "the next callback delivered", func() bool { return h.deliveryStatus("m2", ep) == "delivered" })
}

// Bad hand-overs are refused with InvalidArgument, not queued.
func TestCallbackValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "127.0.0.0/8", func(c *Config) { c.ServiceKey = testServiceKey })
	secret, _ := sign.NewSecret()
	good := func() *dispatcherv1.SendCallbackRequest {
		return &dispatcherv1.SendCallbackRequest{Tenant: h.tenant, Url: "http://127.0.0.1:1/x", Secret: secret,
			MessageId: "m1", Source: "hookyard", Type: "jobs.task.succeeded", Data: []byte(`{}`)}
	}
	for name, change := range map[string]func(r *dispatcherv1.SendCallbackRequest){
		"no tenant":  func(r *dispatcherv1.SendCallbackRequest) { r.Tenant = "" },
		"bad url":    func(r *dispatcherv1.SendCallbackRequest) { r.Url = "ftp://x" },
		"bad secret": func(r *dispatcherv1.SendCallbackRequest) { r.Secret = "nope" },
		"no id":      func(r *dispatcherv1.SendCallbackRequest) { r.MessageId = "" },
		"no type":    func(r *dispatcherv1.SendCallbackRequest) { r.Type = "" },
	} {
		r := good()
		change(r)
		if _, err := h.d.Callbacks.SendCallback(serviceCtx(testServiceKey), r); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// A completion around a task result at the jobs service's 1 MiB cap is
// over the 1 MiB of a message body; the handover must still take it (a
// size refusal is final, so the callback would be dropped).
func TestCallbackTakesAResultAtTheJobsCap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "127.0.0.0/8", func(c *Config) { c.ServiceKey = testServiceKey })
	secret, _ := sign.NewSecret()
	data := append(append([]byte(`{"id":"t1","result":"`), bytes.Repeat([]byte("x"), 1<<20)...), `"}`...)
	r := &dispatcherv1.SendCallbackRequest{Tenant: h.tenant, Url: "http://127.0.0.1:1/x", Secret: secret,
		MessageId: "big", Source: "hookyard", Type: "jobs.task.succeeded", Data: data}
	if _, err := h.d.Callbacks.SendCallback(serviceCtx(testServiceKey), r); err != nil {
		t.Fatalf("SendCallback of %d bytes: %v", len(data), err)
	}
	r.MessageId, r.Data = "too-big", make([]byte, 2<<20)
	if _, err := h.d.Callbacks.SendCallback(serviceCtx(testServiceKey), r); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SendCallback of 2 MiB: %v, want InvalidArgument", err)
	}
}
