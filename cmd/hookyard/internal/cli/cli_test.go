package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/cli"
	"github.com/hookyard/hookyard/services/dispatcher/dispatchertest"
)

const timeout = 60 * time.Second

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is the environment of a command: the dispatcher's address, a key,
// and a config file that does not exist (never the user's own).
func env(t *testing.T, dispatcherAddr, key string) func(string) string {
	vars := map[string]string{
		"HOOKYARD_DISPATCHER_ADDR": dispatcherAddr,
		"HOOKYARD_API_KEY":         key,
		"HOOKYARD_CONFIG":          filepath.Join(t.TempDir(), "config.yaml"),
	}
	return func(k string) string { return vars[k] }
}

// run runs a command to its end.
func run(t *testing.T, getenv func(string) string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	code := cli.Run(ctx, args, &out, &errOut, getenv)
	return code, out.String(), errOut.String()
}

// running is a command running in the background (listen, tail).
type running struct {
	out, err *syncBuffer
	code     chan int
	stop     context.CancelFunc
}

func start(t *testing.T, getenv func(string) string, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{out: &syncBuffer{}, err: &syncBuffer{}, code: make(chan int, 1), stop: cancel}
	go func() { r.code <- cli.Run(ctx, args, r.out, r.err, getenv) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.code:
		case <-time.After(timeout):
			t.Error("command did not stop")
		}
	})
	return r
}

var secretRE = regexp.MustCompile(`Webhook signing secret: (whsec_\S+)`)

// ready waits for listen's ready line and returns the secret it printed.
func (r *running) ready(t *testing.T) string {
	t.Helper()
	var secret string
	dispatchertest.WaitFor(t, timeout, "listen to be ready", func() bool {
		select {
		case c := <-r.code:
			t.Fatalf("listen ended with %d: %s", c, r.err.String())
		default:
		}
		m := secretRE.FindStringSubmatch(r.err.String())
		if m != nil {
			secret = m[1]
		}
		return m != nil
	})
	return secret
}

type hook struct {
	header http.Header
	body   []byte
}

// sink is the developer's local server.
type sink struct {
	*httptest.Server
	mu    sync.Mutex
	hooks []hook
}

func newSink(t *testing.T) *sink {
	s := &sink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.hooks = append(s.hooks, hook{r.Header.Clone(), b})
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sink) byID() map[string][]hook {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string][]hook{}
	for _, h := range s.hooks {
		id := h.header.Get("webhook-id")
		m[id] = append(m[id], h)
	}
	return m
}

func (s *sink) waitFor(t *testing.T, ids ...string) map[string][]hook {
	t.Helper()
	var got map[string][]hook
	dispatchertest.WaitFor(t, timeout, "forwarded "+strings.Join(ids, ", "), func() bool {
		got = s.byID()
		for _, id := range ids {
			if len(got[id]) == 0 {
				return false
			}
		}
		return true
	})
	return got
}

// TestListenForwardsSigned: an event on hookyard.events reaches the local
// server byte for byte, signed so that the Standard Webhooks library
// verifies it with the secret listen printed, and its status is printed.
func TestListenForwardsSigned(t *testing.T) {
	d := dispatchertest.Start(t, dispatchertest.Options{})
	s := newSink(t)
	l := start(t, env(t, d.GRPCAddr, d.Keys["a"]), "listen", "--forward-to", s.URL+"/hook")
	secret := l.ready(t)

	body := []byte(`{"id":"evt_1",  "object":"event", "n": 1.50}`)
	d.Publish(t, "a", "evt_1", "invoice.paid", body)
	h := s.waitFor(t, "evt_1")["evt_1"][0]
	if !bytes.Equal(h.body, body) {
		t.Fatalf("body = %s, want %s", h.body, body)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(h.body, h.header); err != nil {
		t.Fatalf("signature does not verify: %v (headers %v)", err, h.header)
	}
	other, _ := standardwebhooks.NewWebhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if other.Verify(h.body, h.header) == nil {
		t.Fatal("signature verifies with another secret")
	}
	dispatchertest.WaitFor(t, timeout, "status line", func() bool {
		return strings.Contains(l.out.String(), "[200] OK") && strings.Contains(l.out.String(), d.ID+".invoice.paid [evt_1]")
	})
}

// TestListenEventsFilter: --events forwards only matching events.
func TestListenEventsFilter(t *testing.T) {
	d := dispatchertest.Start(t, dispatchertest.Options{})
	s := newSink(t)
	l := start(t, env(t, d.GRPCAddr, d.Keys["a"]), "listen", "--forward-to", s.URL, "--events", d.ID+".invoice.*", "-o", "json")
	l.ready(t)
	d.Publish(t, "a", "skip-1", "customer.created", []byte(`{}`))
	d.Publish(t, "a", "take-1", "invoice.paid", []byte(`{}`))
	got := s.waitFor(t, "take-1")
	if len(got["skip-1"]) != 0 {
		t.Fatal("an event outside --events was forwarded")
	}
	dispatchertest.WaitFor(t, timeout, "json line", func() bool {
		for line := range strings.Lines(l.out.String()) {
			var v struct {
				MessageID string `json:"messageId"`
				Status    int    `json:"status"`
			}
			if json.Unmarshal([]byte(line), &v) == nil && v.MessageID == "take-1" && v.Status == 200 {
				return true
			}
		}
		return false
	})
}

// proxy stands between listen and the dispatcher so a test can cut the
// stream and keep it down.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	refuse bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut(true) })
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.refuse {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// cut closes every connection; with refuse, new ones are closed at once
// until allow.
func (p *proxy) cut(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) allow() {
	p.mu.Lock()
	p.refuse = false
	p.mu.Unlock()
}

// TestListenResumesAfterDrop: events published while the stream is down
// are forwarded once it is back, each once.
func TestListenResumesAfterDrop(t *testing.T) {
	d := dispatchertest.Start(t, dispatchertest.Options{})
	p := newProxy(t, d.GRPCAddr)
	s := newSink(t)
	l := start(t, env(t, p.addr(), d.Keys["a"]), "listen", "--forward-to", s.URL)
	l.ready(t)
	d.Publish(t, "a", "before", "order.created", []byte(`{"n":0}`))
	s.waitFor(t, "before")

	p.cut(true)
	dispatchertest.WaitFor(t, timeout, "listen to notice the drop", func() bool {
		return strings.Contains(l.err.String(), "Stream lost")
	})
	ids := []string{"during-1", "during-2", "during-3"}
	for _, id := range ids {
		d.Publish(t, "a", id, "order.created", []byte(`{"id":"`+id+`"}`))
	}
	// Fanned out (so written to the tenant's stream) while listen is away.
	dispatchertest.WaitFor(t, timeout, "events fanned out", func() bool {
		code, _, _ := run(t, env(t, d.GRPCAddr, d.Keys["a"]), "messages", "get", "during-3")
		return code == cli.ExitOK
	})
	p.allow()

	got := s.waitFor(t, ids...)
	if !strings.Contains(l.err.String(), "Reconnected; events sent meanwhile follow.") {
		t.Fatalf("stderr = %q, want a reconnect note", l.err.String())
	}
	for _, id := range append(ids, "before") {
		if n := len(got[id]); n != 1 {
			t.Fatalf("%s forwarded %d times, want once", id, n)
		}
	}
}

// TestListenTenantIsolation: two tenants listening at once each receive
// only their own events.
func TestListenTenantIsolation(t *testing.T) {
	d := dispatchertest.Start(t, dispatchertest.Options{})
	sa, sb := newSink(t), newSink(t)
	la := start(t, env(t, d.GRPCAddr, d.Keys["a"]), "listen", "--forward-to", sa.URL)
	lb := start(t, env(t, d.GRPCAddr, d.Keys["b"]), "listen", "--forward-to", sb.URL)
	la.ready(t)
	lb.ready(t)

	d.Publish(t, "b", "b-only", "invoice.paid", []byte(`{"tenant":"b"}`))
	sb.waitFor(t, "b-only")
	d.Publish(t, "a", "a-only", "invoice.paid", []byte(`{"tenant":"a"}`))
	sa.waitFor(t, "a-only")
	if len(sa.byID()["b-only"]) != 0 {
		t.Fatal("tenant a received tenant b's event")
	}
	if len(sb.byID()["a-only"]) != 0 {
		t.Fatal("tenant b received tenant a's event")
	}
}

func TestListenBadKey(t *testing.T) {
	d := dispatchertest.Start(t, dispatchertest.Options{})
	s := newSink(t)
	code, _, stderr := run(t, env(t, d.GRPCAddr, "not-a-real-key"), "listen", "--forward-to", s.URL)
	if code != cli.ExitAuth || !strings.Contains(stderr, "Unauthenticated") {
		t.Fatalf("exit %d, stderr %q; want %d and Unauthenticated", code, stderr, cli.ExitAuth)
	}
	code, _, _ = run(t, env(t, d.GRPCAddr, ""), "endpoints", "list")
	if code != cli.ExitAuth {
		t.Fatalf("no key: exit %d, want %d", code, cli.ExitAuth)
	}
}

// TestTail: tail shows an event and its delivery attempt.
func TestTail(t *testing.T) {
	d := dispatchertest.Start(t, dispatchertest.Options{})
	s := newSink(t)
	e := env(t, d.GRPCAddr, d.Keys["a"])
	if code, _, stderr := run(t, e, "endpoints", "create", "--url", s.URL); code != 0 {
		t.Fatalf("create endpoint: %d %s", code, stderr)
	}
	tl := start(t, e, "tail")
	dispatchertest.WaitFor(t, timeout, "tail to follow", func() bool { return strings.Contains(tl.err.String(), "Following") })
	d.Publish(t, "a", "tail-1", "invoice.paid", []byte(`{}`))
	dispatchertest.WaitFor(t, timeout, "event and delivered attempt", func() bool {
		out := tl.out.String()
		return regexp.MustCompile(`event +\S+\.invoice\.paid +tail-1`).MatchString(out) &&
			regexp.MustCompile(`attempt .*tail-1 -> \S+ #1 +200 .*delivered`).MatchString(out)
	})
}

// TestEndpointCommands: create, get, disable, recover and send-test, with
// -o json for scripts and exit codes for missing things and bad usage.
func TestEndpointCommands(t *testing.T) {
	d := dispatchertest.Start(t, dispatchertest.Options{})
	s := newSink(t)
	e := env(t, d.GRPCAddr, d.Keys["a"])
	code, out, stderr := run(t, e, "endpoints", "create", "--url", s.URL, "--event-type", d.ID+".#", "-o", "json")
	if code != 0 {
		t.Fatalf("create: %d %s", code, stderr)
	}
	var ep struct {
		ID         string   `json:"id"`
		Secret     string   `json:"secret"`
		EventTypes []string `json:"eventTypes"`
		Disabled   bool     `json:"disabled"`
	}
	if err := json.Unmarshal([]byte(out), &ep); err != nil || ep.ID == "" || !strings.HasPrefix(ep.Secret, "whsec_") {
		t.Fatalf("create -o json = %s (%v)", out, err)
	}
	if code, out, _ := run(t, e, "endpoints", "list"); code != 0 || !strings.Contains(out, ep.ID) || !strings.Contains(out, "EVENT TYPES") {
		t.Fatalf("list: %d %s", code, out)
	}
	if code, out, _ := run(t, e, "endpoints", "disable", ep.ID, "-o", "json"); code != 0 || json.Unmarshal([]byte(out), &ep) != nil || !ep.Disabled {
		t.Fatalf("disable: %d %s", code, out)
	}
	if code, out, _ := run(t, e, "endpoints", "recover", ep.ID); code != 0 || !strings.Contains(out, "Recovered endpoint") {
		t.Fatalf("recover: %d %s", code, out)
	}
	code, out, _ = run(t, e, "endpoints", "send-test", ep.ID, "-o", "json")
	var sent struct {
		MessageID string `json:"messageId"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &sent) != nil || sent.MessageID == "" {
		t.Fatalf("send-test: %d %s", code, out)
	}
	dispatchertest.WaitFor(t, timeout, "ping delivered", func() bool {
		code, out, _ := run(t, e, "messages", "attempts", sent.MessageID)
		return code == 0 && strings.Contains(out, ep.ID)
	})
	// The endpoint's health: its breaker, failure run, in-flight and held
	// deliveries.
	if code, out, _ := run(t, e, "endpoints", "get", ep.ID); code != 0 || !regexp.MustCompile(`Breaker: +closed`).MatchString(out) ||
		!regexp.MustCompile(`In flight: +\d+ of \d+`).MatchString(out) || !regexp.MustCompile(`Held: +0`).MatchString(out) {
		t.Fatalf("get: %d %s", code, out)
	}
	if code, out, _ := run(t, e, "endpoints", "list"); code != 0 || !strings.Contains(out, "BREAKER") || !strings.Contains(out, "closed") {
		t.Fatalf("list with health: %d %s", code, out)
	}
	// The dispatcher's queues, shared by every tenant.
	code, out, stderr = run(t, e, "delivery-queues")
	if code != 0 || !regexp.MustCompile(`\.deliveries +deliveries +- +\d+ +\d+`).MatchString(out) || !strings.Contains(out, "dead_letter") {
		t.Fatalf("delivery-queues: %d %s %s", code, out, stderr)
	}
	if code, _, _ := run(t, e, "endpoints", "get", "no-such-endpoint"); code != cli.ExitNotFound {
		t.Fatalf("get missing: exit %d, want %d", code, cli.ExitNotFound)
	}
	// Another tenant's endpoint is not found either.
	if code, _, _ := run(t, env(t, d.GRPCAddr, d.Keys["b"]), "endpoints", "get", ep.ID); code != cli.ExitNotFound {
		t.Fatalf("other tenant's endpoint: exit %d, want %d", code, cli.ExitNotFound)
	}
	if code, _, _ := run(t, e, "endpoints", "get"); code != cli.ExitUsage {
		t.Fatalf("missing argument: exit %d, want %d", code, cli.ExitUsage)
	}
	if code, _, _ := run(t, e, "endpoints", "create", "--url", "ftp://x"); code != cli.ExitUsage {
		t.Fatalf("bad url: exit %d, want %d", code, cli.ExitUsage)
	}
	if code, _, _ := run(t, e, "endpoints", "list", "-o", "yaml"); code != cli.ExitUsage {
		t.Fatalf("bad -o: exit %d, want %d", code, cli.ExitUsage)
	}
}
