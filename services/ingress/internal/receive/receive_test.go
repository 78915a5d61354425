package receive

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/services/ingress/internal/ingest"
	"github.com/hookyard/hookyard/services/ingress/internal/source"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

const secret = "whsec_receive_test_secret"

type harness struct {
	t       testing.TB
	srv     *httptest.Server
	store   *source.Store
	rdb     redis.UniversalClient
	ch      *amqp.Channel
	source  string
	queue   string
	proxy   *rabbittest.Proxy
	tenant  string
	handler *Handler
	// confirmed, if set, is told how long each broker confirm took.
	confirmed atomic.Pointer[func(time.Duration)]
	topo      rabbit.Topology // private events exchange and its alternate
}

func redisURL() string {
	if u := os.Getenv("HOOKYARD_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// newHarness runs the receiver against the real broker (through a proxy the
// test can cut) and real Redis, with a queue bound to the source's events.
func newHarness(t testing.TB, rdbURL string) *harness {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	h := &harness{t: t, tenant: "acme"}
	h.source = rabbittest.UniqueName(t, "src")
	if len(h.source) > 63 {
		h.source = h.source[len(h.source)-63:]
	}
	h.source = "s" + h.source[1:]

	rdb, err := redisconn.Open(redisURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	h.rdb = rdb
	prefix := "test:" + h.source
	t.Cleanup(func() {
		keys, _ := rdb.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	h.store = source.New(rdb, prefix)
	if _, err := h.store.Create(ctx, h.tenant, &ingressv1.Source{Name: h.source, Provider: "stripe", Secrets: []string{secret}}); err != nil {
		t.Fatal(err)
	}

	// The broker as seen by the code under test goes through a proxy.
	h.proxy = rabbittest.NewBrokerProxy(t)
	connCtx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// A private events exchange: a catch-all binding on the shared one
	// (any dispatcher on this broker has one) would take the events that
	// TestUnroutedEventIsKept expects to find unrouted.
	h.topo = rabbit.Topology{Events: "test." + h.source + ".events", Unrouted: "test." + h.source + ".unrouted"}
	conn := rabbit.DialConfig(connCtx, h.proxy.URL(), rabbit.Config{Setup: rabbit.DeclareFunc(h.topo.Declare)})
	pub := rabbit.NewPublisher(conn, rabbit.PublisherConfig{Channels: 1})
	t.Cleanup(func() { pub.Close(); conn.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for conn.Check(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("broker not reachable")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The test inspects the bus with its own direct connection.
	admin, err := amqp.Dial(rabbittest.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	h.ch, err = admin.Channel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = h.ch.QueueDelete(h.topo.Unrouted, false, false, false)
		_ = h.ch.ExchangeDelete(h.topo.Events, false, false)
		_ = h.ch.ExchangeDelete(h.topo.Unrouted, false, false)
	})
	h.queue = rabbittest.TempQueue(t, h.ch, "q")
	if err := h.ch.QueueBind(h.queue, h.source+".#", h.topo.Events, false, nil); err != nil {
		t.Fatal(err)
	}

	if rdbURL != "" {
		dead, err := redisconn.Open(rdbURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dead.Close() })
		rdb = dead
	}
	in := ingest.New(&timedSender{Publisher: pub, h: h}, dedupe.New(rdb, prefix+":dedupe"), log, prometheus.NewRegistry())
	in.ConfirmTimeout, in.Exchange = 3*time.Second, h.topo.Events
	lookup := h.store
	if rdbURL != "" {
		lookup = source.New(rdb, prefix)
	}
	h.handler = New(lookup, in, log, prometheus.NewRegistry())
	mux := http.NewServeMux()
	mux.Handle("POST /webhooks/{source}", h.handler)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

func stripeSign(body []byte, ts time.Time, key string) string {
	m := hmac.New(sha256.New, []byte(key))
	fmt.Fprintf(m, "%d.%s", ts.Unix(), body)
	return "t=" + strconv.FormatInt(ts.Unix(), 10) + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

func (h *harness) post(body []byte, sig string) (int, http.Header, string) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/webhooks/"+h.source, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if sig != "" {
		req.Header.Set("Stripe-Signature", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func (h *harness) count() int {
	q, err := h.ch.QueueDeclarePassive(h.queue, false, true, false, false, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return q.Messages
}

func (h *harness) waitCount(want int) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.count() != want {
		if time.Now().After(deadline) {
			h.t.Fatalf("queue holds %d messages, want %d", h.count(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A 2xx means the event is on the bus byte-identical, with the routing key
// and CloudEvents headers; a replay is answered without a second publish.
func TestAcceptedEventIsOnTheBus(t *testing.T) {
	h := newHarness(t, "")
	body := []byte(`{"id":"evt_1","type":"invoice.paid","data":{"object":{"amount": 100}}}` + "\n")
	code, _, resp := h.post(body, stripeSign(body, time.Now(), secret))
	if code != http.StatusAccepted {
		t.Fatalf("status %d %s", code, resp)
	}
	d, ok, err := h.ch.Get(h.queue, true)
	if err != nil || !ok {
		t.Fatalf("no message on the bus: %v", err)
	}
	if !bytes.Equal(d.Body, body) {
		t.Fatalf("body changed on the bus:\n got %q\nwant %q", d.Body, body)
	}
	if want := h.source + ".invoice.paid"; d.RoutingKey != want {
		t.Errorf("routing key %q, want %q", d.RoutingKey, want)
	}
	if d.DeliveryMode != amqp.Persistent {
		t.Errorf("delivery mode %d, want persistent", d.DeliveryMode)
	}
	if d.MessageId != "evt_1" || d.Type != "invoice.paid" || d.Timestamp.IsZero() {
		t.Errorf("AMQP properties: id %q type %q ts %v", d.MessageId, d.Type, d.Timestamp)
	}
	ev, err := cloudevent.FromDelivery(d)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetId() != "evt_1" || ev.GetType() != "invoice.paid" || ev.GetTenant() != "acme" || ev.GetSource() != h.source || ev.GetSpecVersion() != "1.0" {
		t.Errorf("event attributes: %+v", ev)
	}
	if d.Headers["ce-id"] != "evt_1" || d.Headers["ce-specversion"] != "1.0" {
		t.Errorf("ce-* headers missing: %v", d.Headers)
	}

	code, _, resp = h.post(body, stripeSign(body, time.Now(), secret))
	if code != http.StatusOK {
		t.Fatalf("replay: status %d %s", code, resp)
	}
	time.Sleep(200 * time.Millisecond)
	if n := h.count(); n != 0 {
		t.Fatalf("replay was published again (%d messages)", n)
	}
}

func TestBadRequestsAreRefused(t *testing.T) {
	h := newHarness(t, "")
	body := []byte(`{"id":"evt_2","type":"invoice.paid"}`)
	tampered := append([]byte{}, body...)
	tampered[10] ^= 1
	cases := []struct {
		name string
		body []byte
		sig  string
		want int
	}{
		{"no signature", body, "", 401},
		{"tampered body", tampered, stripeSign(body, time.Now(), secret), 401},
		{"other secret", body, stripeSign(body, time.Now(), "whsec_other"), 401},
		{"stale timestamp", body, stripeSign(body, time.Now().Add(-time.Hour), secret), 401},
		{"garbage header", body, "t=abc,v1=zz", 400},
	}
	for _, c := range cases {
		code, _, resp := h.post(c.body, c.sig)
		if code != c.want {
			t.Errorf("%s: status %d (%s), want %d", c.name, code, resp, c.want)
		}
	}
	big := bytes.Repeat([]byte("a"), source.DefaultMaxBodyBytes+1)
	if code, _, _ := h.post(big, stripeSign(big, time.Now(), secret)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d", code)
	}
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/webhooks/no-such-source", bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown source: %d", resp.StatusCode)
	}
	if n := h.count(); n != 0 {
		t.Fatalf("refused requests published %d messages", n)
	}
}

// With the broker unreachable the receiver answers 503 and publishes
// nothing; once it is back the provider's retry is accepted exactly once.
func TestBrokerDownIs503ThenRetrySucceeds(t *testing.T) {
	h := newHarness(t, "")
	h.proxy.Cut()
	body := []byte(`{"id":"evt_3","type":"charge.failed"}`)
	code, hdr, resp := h.post(body, stripeSign(body, time.Now(), secret))
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("broker down: status %d Retry-After %q %s", code, hdr.Get("Retry-After"), resp)
	}
	if n := h.count(); n != 0 {
		t.Fatalf("published %d messages while the broker was unreachable", n)
	}
	h.proxy.Restore()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _, resp = h.post(body, stripeSign(body, time.Now(), secret))
		if code == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restore: status %d %s", code, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.waitCount(1)
}

func TestRedisDownIs503(t *testing.T) {
	h := newHarness(t, "redis://127.0.0.1:1/0")
	body := []byte(`{"id":"evt_4","type":"charge.failed"}`)
	code, hdr, _ := h.post(body, stripeSign(body, time.Now(), secret))
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("redis down: status %d", code)
	}
	if n := h.count(); n != 0 {
		t.Fatalf("published %d messages while Redis was unreachable", n)
	}
}

// An event no queue is bound for is kept by the alternate exchange.
func TestUnroutedEventIsKept(t *testing.T) {
	h := newHarness(t, "")
	if err := h.ch.QueueUnbind(h.queue, h.source+".#", h.topo.Events, nil); err != nil {
		t.Fatal(err)
	}
	// A private queue on the fanout alternate exchange sees a copy of
	// every unroutable event, without touching the shared unrouted queue.
	watch := rabbittest.UniqueName(t, "unrouted")
	if _, err := h.ch.QueueDeclare(watch, false, true, true, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.ch.QueueBind(watch, "", h.topo.Unrouted, false, nil); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"evt_unrouted_` + h.source + `","type":"nobody.listens"}`)
	if code, _, resp := h.post(body, stripeSign(body, time.Now(), secret)); code != http.StatusAccepted {
		t.Fatalf("status %d %s", code, resp)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		d, ok, err := h.ch.Get(watch, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok && bytes.Equal(d.Body, body) {
			if d.RoutingKey != h.source+".nobody.listens" {
				t.Errorf("routing key %q", d.RoutingKey)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("unroutable event not found in the unrouted queue")
}

// A type that makes the routing key longer than AMQP allows is the
// sender's error (400), not an outage (503) to retry forever, and it must
// not break the broker connection that other webhooks share.
func TestOverlongRoutingKeyIs400(t *testing.T) {
	h := newHarness(t, "")
	// The longest type allowed, under a source long enough that the two
	// together exceed the routing key's limit.
	long := strings.Repeat("t", publish.MaxTypeLen)
	name := (h.source + strings.Repeat("x", publish.MaxSourceLen))[:publish.MaxSourceLen]
	if _, err := h.store.Create(context.Background(), h.tenant, &ingressv1.Source{Name: name, Provider: "stripe", Secrets: []string{secret}}); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"evt_long","type":"` + long + `"}`)
	own := h.source
	h.source = name
	code, _, resp := h.post(body, stripeSign(body, time.Now(), secret))
	h.source = own
	if code != http.StatusBadRequest || !strings.Contains(resp, "routing key") {
		t.Fatalf("overlong routing key: %d %s, want 400 naming the routing key", code, resp)
	}
	// The connection still works, and the id was not taken.
	ok := []byte(`{"id":"evt_after_long","type":"invoice.paid"}`)
	if code, _, resp := h.post(ok, stripeSign(ok, time.Now(), secret)); code != http.StatusAccepted {
		t.Fatalf("next webhook: %d %s", code, resp)
	}
	h.waitCount(1)
}

// Mailgun signs only a timestamp and a token, not the event. A captured
// signature block on a forged event is refused; the provider's own retry
// of the same event is not.
func TestMailgunTokenBoundToItsEvent(t *testing.T) {
	h := newHarness(t, "")
	name := h.source[:len(h.source)-1] + "m"
	const key = "mailgun-signing-key"
	if _, err := h.store.Create(context.Background(), h.tenant, &ingressv1.Source{Name: name, Provider: "mailgun", Secrets: []string{key}}); err != nil {
		t.Fatal(err)
	}
	post := func(token, id string) (int, string) {
		t.Helper()
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		m := hmac.New(sha256.New, []byte(key))
		m.Write([]byte(ts + token))
		body := fmt.Sprintf(`{"signature":{"timestamp":%q,"token":%q,"signature":%q},"event-data":{"id":%q,"event":"delivered"}}`,
			ts, token, hex.EncodeToString(m.Sum(nil)), id)
		resp, err := http.Post(h.srv.URL+"/webhooks/"+name, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tok := rabbittest.UniqueName(t, "token")
	if code, resp := post(tok, "evt-1"); code != http.StatusAccepted {
		t.Fatalf("genuine event: %d %s", code, resp)
	}
	if code, resp := post(tok, "evt-1"); code != http.StatusOK {
		t.Fatalf("the provider's retry of it: %d %s, want 200 (duplicate)", code, resp)
	}
	if code, resp := post(tok, "evt-forged"); code != http.StatusUnauthorized || !strings.Contains(resp, "already used") {
		t.Fatalf("its signature on another event: %d %s, want 401", code, resp)
	}
	if code, resp := post(tok+"-2", "evt-2"); code != http.StatusAccepted {
		t.Fatalf("another event with its own token: %d %s", code, resp)
	}
}

// Webhook bodies share the server's body budget with REST: when bodies in
// flight hold it all, a webhook is answered 503 with Retry-After (the
// provider retries) instead of being buffered.
func TestBodyBudgetSpentIs503(t *testing.T) {
	h := newHarness(t, "")
	h.handler.Bodies = server.NewBodyBudget(1<<10, 100*time.Millisecond)
	// A stalled request holds the whole budget.
	pr, pw := io.Pipe()
	defer pw.Close()
	stalled := httptest.NewRequest(http.MethodPost, "/", pr)
	stalled.ContentLength = 1 << 10
	go func() {
		_, release, _ := h.handler.Bodies.Read(httptest.NewRecorder(), stalled, 1<<20)
		release()
	}()
	body := []byte(`{"id":"evt_budget","type":"invoice.paid"}`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, hdr, resp := h.post(body, stripeSign(body, time.Now(), secret))
		if code == http.StatusServiceUnavailable {
			if hdr.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget spent: got %d %s, want 503", code, resp)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pw.CloseWithError(io.ErrUnexpectedEOF)
	for {
		code, _, resp := h.post(body, stripeSign(body, time.Now(), secret))
		if code == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget returned: got %d %s, want 202", code, resp)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A captured GitHub webhook replayed under a new X-GitHub-Delivery is
// refused, and one replayed with a new X-GitHub-Event cannot reach the
// subscribers of another event type: GitHub signs neither header.
func TestGitHubReplayWithNewDeliveryIsRefused(t *testing.T) {
	h := newHarness(t, "")
	const ghSecret = "github-webhook-secret"
	if _, err := h.store.Modify(context.Background(), h.tenant, h.source, func(cur *ingressv1.Source) (*ingressv1.Source, error) {
		cur.Provider, cur.Secrets = "github", []string{ghSecret}
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"action":"opened","number":1,"pull_request":{"id":1}}`)
	m := hmac.New(sha256.New, []byte(ghSecret))
	m.Write(body)
	sig := "sha256=" + hex.EncodeToString(m.Sum(nil))
	send := func(delivery, event string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/webhooks/"+h.source, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Hub-Signature-256", sig)
		req.Header.Set("X-GitHub-Delivery", delivery)
		req.Header.Set("X-GitHub-Event", event)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, resp := send("d-1", "pull_request"); code != http.StatusAccepted {
		t.Fatalf("original: %d %s", code, resp)
	}
	h.waitCount(1)
	// GitHub's own redelivery keeps the delivery id: a duplicate.
	if code, resp := send("d-1", "pull_request"); code != http.StatusOK {
		t.Errorf("redelivery: %d %s, want 200 duplicate", code, resp)
	}
	if code, resp := send("d-2", "pull_request"); code != http.StatusUnauthorized {
		t.Errorf("replay under a new delivery id: %d %s, want 401", code, resp)
	}
	if code, resp := send("d-3", "issues"); code != http.StatusUnauthorized {
		t.Errorf("replay under a new delivery id and event: %d %s, want 401", code, resp)
	}
	if code, resp := send("d-1", "issues"); code >= 200 && code < 300 && !strings.Contains(resp, "duplicate") {
		t.Errorf("replay under a new event: %d %s, want it not published", code, resp)
	}
	time.Sleep(200 * time.Millisecond)
	if n := h.count(); n != 1 {
		t.Fatalf("%d messages on the bus, want only the original", n)
	}
}

// timedSender tells the harness how long each confirm took, when asked to.
type timedSender struct {
	*rabbit.Publisher
	h *harness
}

func (t *timedSender) SendUntil(ctx context.Context, stop <-chan struct{}, exchange, key string, msg amqp.Publishing) (*rabbit.Confirmation, error) {
	start := time.Now()
	c, err := t.Publisher.SendUntil(ctx, stop, exchange, key, msg)
	if f := t.h.confirmed.Load(); f != nil && err == nil {
		go func() {
			<-c.Done()
			(*f)(time.Since(start))
		}()
	}
	return c, err
}
