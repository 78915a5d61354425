package dispatcher

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
)

const loopback = "127.0.0.0/8,::1/128"

type request struct {
	header http.Header
	body   []byte
	at     time.Time
}

// sink is a subscriber: answer decides the status of each request.
type sink struct {
	*httptest.Server
	mu       sync.Mutex
	requests []request
	answer   func(r request) int
}

func newSink(t *testing.T, answer func(r request) int) *sink {
	s := &sink{answer: answer}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := request{header: r.Header.Clone(), body: body, at: time.Now()}
		s.mu.Lock()
		s.requests = append(s.requests, req)
		answer := s.answer
		s.mu.Unlock()
		w.WriteHeader(answer(req))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sink) setAnswer(f func(request) int) { s.mu.Lock(); s.answer = f; s.mu.Unlock() }

func (s *sink) all() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.requests...)
}

func ok(request) int { return http.StatusOK }

// TestEndToEndSignedDelivery: an event on hookyard.events and a message
// sent through the API both reach the subscriber, byte for byte, and verify
// with the Standard Webhooks library, also across a secret rotation.
func TestEndToEndSignedDelivery(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, ok)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL + "/hook", EventTypes: []string{h.id + ".invoice.*"}})
	oldSecret := ep.GetSecret()

	raw := []byte(`{"b": 2,   "a":[1, 2 ,3] }`)
	h.publish("evt-1", "invoice.paid", raw)
	h.publish("evt-ignored", "customer.created", []byte(`{}`)) // does not match
	waitFor(t, 10*time.Second, "first delivery", func() bool { return len(s.all()) >= 1 })

	got := s.all()[0]
	if string(got.body) != string(raw) {
		t.Fatalf("body changed in transit: %q, want %q", got.body, raw)
	}
	if got.header.Get("webhook-id") != "evt-1" || got.header.Get("Content-Type") != "application/json" {
		t.Fatalf("headers: %v", got.header)
	}
	verify(t, oldSecret, got, true)

	rot, err := h.d.Endpoints.RotateEndpointSecret(h.ctx(), &dispatcherv1.RotateEndpointSecretRequest{Id: ep.GetId(), Overlap: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if rot.GetSecret() == oldSecret || rot.GetSecret() == "" {
		t.Fatal("rotation returned no new secret")
	}
	// The rotated secret must reach the delivery path (cache ≤ 1s).
	time.Sleep(endpoint.CacheTTL + 100*time.Millisecond)

	data, _ := structpb.NewValue(map[string]any{"amount": 42})
	sent, err := h.d.Messages.SendMessage(h.ctx(), &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "msg-2", Source: h.id, Type: "invoice.created", Data: data}})
	if err != nil {
		t.Fatal(err)
	}
	// Idempotent on id.
	if _, err := h.d.Messages.SendMessage(h.ctx(), &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "msg-2", Source: h.id, Type: "invoice.created", Data: data}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "second delivery", func() bool { return len(s.all()) >= 2 })
	time.Sleep(300 * time.Millisecond)
	reqs := s.all()
	if len(reqs) != 2 {
		t.Fatalf("got %d requests, want 2 (non-matching event or duplicate send delivered?)", len(reqs))
	}
	second := reqs[1]
	if second.header.Get("webhook-id") != sent.GetId() {
		t.Fatalf("webhook-id %q, want %q", second.header.Get("webhook-id"), sent.GetId())
	}
	verify(t, rot.GetSecret(), second, true)
	verify(t, oldSecret, second, true)
	verify(t, "whsec_"+"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw9KUHJwfDn3w=", second, false)

	m := h.message("evt-1")
	if len(m.GetDeliveries()) != 1 || m.GetDeliveries()[0].GetStatus() != "delivered" {
		t.Fatalf("deliveries of evt-1: %v", m.GetDeliveries())
	}
	atts, err := h.d.Messages.ListMessageAttempts(h.ctx(), &dispatcherv1.ListMessageAttemptsRequest{Id: "evt-1"})
	if err != nil || len(atts.GetAttempts()) != 1 || atts.GetAttempts()[0].GetStatusCode() != 200 {
		t.Fatalf("attempts: %v %v", atts, err)
	}
}

func verify(t *testing.T, secret string, r request, want bool) {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	err = wh.Verify(r.body, r.header)
	if want && err != nil {
		t.Fatalf("verification failed: %v (signature %q)", err, r.header.Get("webhook-signature"))
	}
	if !want && err == nil {
		t.Fatal("verification with an unrelated secret succeeded")
	}
}

// TestFlakyEndpointEffectivelyOnce: 100 events to an endpoint failing 20%
// of requests with 5xx are all delivered, each webhook-id successfully once.
func TestFlakyEndpointEffectivelyOnce(t *testing.T) {
	h := newHarness(t, loopback, nil)
	var mu sync.Mutex
	success := map[string]int{}
	s := newSink(t, func(r request) int {
		if rand.N(5) == 0 {
			return http.StatusServiceUnavailable
		}
		mu.Lock()
		success[r.header.Get("webhook-id")]++
		mu.Unlock()
		return http.StatusOK
	})
	h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	const n = 100
	for i := range n {
		h.publish(fmt.Sprintf("flaky-%d", i), "order.created", fmt.Appendf(nil, `{"n":%d}`, i))
	}
	waitFor(t, 60*time.Second, "all events delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(success) == n
	})
	time.Sleep(time.Second) // let stray duplicates show up
	mu.Lock()
	defer mu.Unlock()
	for id, c := range success {
		if c != 1 {
			t.Errorf("%s delivered successfully %d times", id, c)
		}
	}
	t.Logf("%d requests for %d events", len(s.all()), n)
}

// TestGoneDisablesAndHolds: a 410 disables the endpoint and publishes
// hookyard.endpoint.disabled; messages arriving meanwhile are held and
// delivered after recover.
func TestGoneDisablesAndHolds(t *testing.T) {
	h := newHarness(t, loopback, nil)
	// Watch for the operational event.
	ch := adminChannel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "hookyard.endpoint.disabled", rabbit.EventsExchange, false, nil); err != nil {
		t.Fatal(err)
	}
	events, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	s := newSink(t, func(request) int { return http.StatusGone })
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.publish("gone-0", "thing.happened", []byte(`{"i":0}`))

	timeout := time.After(10 * time.Second)
wait:
	for {
		select {
		case d := <-events:
			if d.Headers["ce-tenant"] != h.tenant {
				continue
			}
			var data dispatcherv1.EndpointDisabled
			if err := protojson.Unmarshal(d.Body, &data); err != nil {
				t.Fatal(err)
			}
			if data.GetEndpointId() != ep.GetId() || data.GetReason() != "gone" {
				t.Fatalf("disabled event: %v", &data)
			}
			break wait
		case <-timeout:
			t.Fatal("no hookyard.endpoint.disabled event")
		}
	}
	got, err := h.d.Endpoints.GetEndpoint(h.ctx(), &dispatcherv1.GetEndpointRequest{Id: ep.GetId()})
	if err != nil || !got.GetDisabled() || got.GetDisabledReason() != "gone" {
		t.Fatalf("endpoint after 410: %v %v", got, err)
	}

	for i := 1; i <= 3; i++ {
		h.publish(fmt.Sprintf("gone-%d", i), "thing.happened", fmt.Appendf(nil, `{"i":%d}`, i))
	}
	for i := 0; i <= 3; i++ {
		waitFor(t, 10*time.Second, "held delivery", func() bool { return h.deliveryStatus(fmt.Sprintf("gone-%d", i), ep.GetId()) == "held" })
	}
	if n := len(s.all()); n != 1 {
		t.Fatalf("disabled endpoint received %d requests, want only the first", n)
	}

	s.setAnswer(ok)
	rec, err := h.d.Endpoints.RecoverEndpoint(h.ctx(), &dispatcherv1.RecoverEndpointRequest{Id: ep.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if rec.GetResentCount() != 4 {
		t.Fatalf("recover resent %d, want 4", rec.GetResentCount())
	}
	for i := 0; i <= 3; i++ {
		waitFor(t, 10*time.Second, "delivery after recover", func() bool { return h.deliveryStatus(fmt.Sprintf("gone-%d", i), ep.GetId()) == "delivered" })
	}
}

// TestAutoDisableAfterFailing: an endpoint failing for longer than the
// configured time is disabled with reason "failing".
func TestAutoDisableAfterFailing(t *testing.T) {
	h := newHarness(t, loopback, func(c *Config) {
		c.AutoDisableAfter = time.Second
		c.RetrySchedule = "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms"
	})
	s := newSink(t, func(request) int { return http.StatusInternalServerError })
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.publish("fail-1", "x.y", []byte(`{}`))
	waitFor(t, 15*time.Second, "auto-disable", func() bool {
		got, err := h.d.Endpoints.GetEndpoint(h.ctx(), &dispatcherv1.GetEndpointRequest{Id: ep.GetId()})
		return err == nil && got.GetDisabled() && got.GetDisabledReason() == "failing"
	})
	waitFor(t, 10*time.Second, "delivery held", func() bool { return h.deliveryStatus("fail-1", ep.GetId()) == "held" })
}

// TestPermanentFailureDeadLetterAndResend: a 400 dead-letters at once; a
// resend delivers it.
func TestPermanentFailureDeadLetterAndResend(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, func(request) int { return http.StatusBadRequest })
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.publish("perm-1", "x.y", []byte(`{"p":1}`))
	var dls *dispatcherv1.ListDeadLettersResponse
	waitFor(t, 10*time.Second, "dead letter", func() bool {
		var err error
		dls, err = h.d.Messages.ListDeadLetters(h.ctx(), &dispatcherv1.ListDeadLettersRequest{EndpointId: ep.GetId()})
		return err == nil && len(dls.GetDeadLetters()) == 1
	})
	dl := dls.GetDeadLetters()[0]
	if dl.GetMessageId() != "perm-1" || dl.GetLastAttempt().GetStatusCode() != 400 || dl.GetLastAttempt().GetErrorClass() != "status" {
		t.Fatalf("dead letter: %v", dl)
	}
	if n := len(s.all()); n != 1 {
		t.Fatalf("a 400 was retried: %d requests", n)
	}
	s.setAnswer(ok)
	res, err := h.d.Messages.ResendMessage(h.ctx(), &dispatcherv1.ResendMessageRequest{Id: "perm-1"})
	if err != nil || res.GetResentCount() != 1 {
		t.Fatalf("resend: %v %v", res, err)
	}
	waitFor(t, 10*time.Second, "delivery after resend", func() bool { return h.deliveryStatus("perm-1", ep.GetId()) == "delivered" })
	all, err := h.d.Messages.ListDeadLetters(h.ctx(), &dispatcherv1.ListDeadLettersRequest{})
	if err != nil || len(all.GetDeadLetters()) != 0 {
		t.Fatalf("dead letters after resend: %v %v", all, err)
	}
}

// TestBlockedAddress: without an allowlist a URL that resolves to loopback
// is refused at registration when literal and at dial time otherwise, and
// the attempt is logged with error class "blocked".
func TestBlockedAddress(t *testing.T) {
	h := newHarness(t, "", nil)
	s := newSink(t, ok)
	_, err := h.d.Endpoints.CreateEndpoint(h.ctx(), &dispatcherv1.CreateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Url: s.URL}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("create with loopback URL: %v, want InvalidArgument", err)
	}
	// A hostname passes registration; what it resolves to is only known
	// at dial time. Store one that resolves to 127.0.0.1 (bypassing the
	// API, as DNS rebinding would after registration).
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	ep, err := h.d.Endpoints.Endpoints.Create(context.Background(), h.tenant, &dispatcherv1.Endpoint{Url: "http://localhost:" + port + "/"})
	if err != nil {
		t.Fatal(err)
	}
	h.publish("blocked-1", "x.y", []byte(`{}`))
	waitFor(t, 10*time.Second, "blocked attempt", func() bool {
		atts, err := h.d.Messages.ListMessageAttempts(h.ctx(), &dispatcherv1.ListMessageAttemptsRequest{Id: "blocked-1"})
		return err == nil && len(atts.GetAttempts()) > 0 && atts.GetAttempts()[0].GetErrorClass() == "blocked" && atts.GetAttempts()[0].GetEndpointId() == ep.GetId()
	})
	if n := len(s.all()); n != 0 {
		t.Fatalf("blocked endpoint received %d requests", n)
	}
}

// TestTenancy: another tenant's key sees nothing; no key is refused.
func TestTenancy(t *testing.T) {
	h := newHarness(t, loopback, nil)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: "https://example.com/hook"})
	other := newHarnessCtx(h, "other-"+h.id)
	if _, err := h.d.Endpoints.GetEndpoint(other, &dispatcherv1.GetEndpointRequest{Id: ep.GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("other tenant get: %v, want NotFound", err)
	}
	if _, err := h.d.Endpoints.DeleteEndpoint(other, &dispatcherv1.DeleteEndpointRequest{Id: ep.GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("other tenant delete: %v, want NotFound", err)
	}
	list, err := h.d.Endpoints.ListEndpoints(other, &dispatcherv1.ListEndpointsRequest{})
	if err != nil || len(list.GetEndpoints()) != 0 {
		t.Fatalf("other tenant list: %v %v", list, err)
	}
	if _, err := h.d.Endpoints.GetEndpoint(context.Background(), &dispatcherv1.GetEndpointRequest{Id: ep.GetId()}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no tenant: %v, want Unauthenticated", err)
	}
	got, err := h.d.Endpoints.GetEndpoint(h.ctx(), &dispatcherv1.GetEndpointRequest{Id: ep.GetId()})
	if err != nil || got.GetSecret() != "" {
		t.Fatalf("own get: %v (secret must not be shown) %v", got, err)
	}
	for _, bad := range []*dispatcherv1.Endpoint{
		{Url: "ftp://example.com/"},
		{Url: "https://example.com/", EventTypes: []string{"a..b"}},
		{Url: "https://example.com/", MaxInFlight: -1},
		{Url: "https://example.com/", Headers: map[string]string{"webhook-id": "x"}},
		{Url: "https://example.com/", Timeout: durationpb.New(time.Hour)},
	} {
		if _, err := h.d.Endpoints.CreateEndpoint(h.ctx(), &dispatcherv1.CreateEndpointRequest{Endpoint: bad}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("create %v: %v, want InvalidArgument", bad, err)
		}
	}
}

// TestSlowEndpointDoesNotBlockOthers: a slow endpoint at its in-flight
// limit defers its own tasks instead of holding consumer slots.
func TestSlowEndpointDoesNotBlockOthers(t *testing.T) {
	h := newHarness(t, loopback, func(c *Config) { c.Concurrency = 8 })
	slow := newSink(t, func(request) int { time.Sleep(2 * time.Second); return http.StatusOK })
	fast := newSink(t, ok)
	h.createEndpoint(&dispatcherv1.Endpoint{Url: slow.URL, MaxInFlight: 2, EventTypes: []string{h.id + ".slow.*"}})
	h.createEndpoint(&dispatcherv1.Endpoint{Url: fast.URL, EventTypes: []string{h.id + ".fast.*"}})
	for i := range 20 {
		h.publish(fmt.Sprintf("slow-%d", i), "slow.event", []byte(`{}`))
	}
	start := time.Now()
	for i := range 20 {
		h.publish(fmt.Sprintf("fast-%d", i), "fast.event", []byte(`{}`))
	}
	waitFor(t, 3*time.Second, "fast endpoint's 20 messages", func() bool { return len(fast.all()) == 20 })
	t.Logf("fast endpoint got 20 messages in %v while the slow one had %d", time.Since(start), len(slow.all()))
}

func newHarnessCtx(_ *harness, tenant string) context.Context {
	return auth.WithTenant(context.Background(), tenant)
}

// A resent delivery starts its retry schedule again but continues its
// attempt count: the attempt the resend makes is stored as number 2, and
// the delivery shows 2 attempts, not 1.
func TestResendContinuesAttemptCount(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, func(request) int { return http.StatusBadRequest })
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.publish("count-1", "x.y", []byte(`{}`))
	waitFor(t, 20*time.Second, "dead letter", func() bool { return h.deliveryStatus("count-1", ep.GetId()) == "failed" })
	s.setAnswer(ok)
	if _, err := h.d.Messages.ResendMessage(h.ctx(), &dispatcherv1.ResendMessageRequest{Id: "count-1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "delivery after resend", func() bool { return h.deliveryStatus("count-1", ep.GetId()) == "delivered" })
	for _, d := range h.message("count-1").GetDeliveries() {
		if d.GetAttempts() != 2 {
			t.Errorf("delivery %v: want 2 attempts", d)
		}
	}
	raw, err := h.rdb.LRange(context.Background(), fmt.Sprintf("%s:att:{%s}:%s", h.cfg.KeyPrefix, h.tenant, "count-1"), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	var numbers []int32
	for _, v := range raw {
		a := &dispatcherv1.Attempt{}
		if err := proto.Unmarshal([]byte(v), a); err != nil {
			t.Fatal(err)
		}
		numbers = append(numbers, a.GetNumber())
	}
	if !slices.Equal(numbers, []int32{1, 2}) {
		t.Fatalf("stored attempt numbers %v, want [1 2]", numbers)
	}
}
