package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hookyard/hookyard/platform/sign"
)

// Sink is the subscriber side: an HTTP server on loopback that records when
// each signed webhook arrives, checks its signature, and answers 200 (or,
// for a slow endpoint, after a delay). Requests go to /<phase>/<endpoint>,
// so each phase and endpoint has its own URL.
type Sink struct {
	URL string
	srv *http.Server

	mu     sync.Mutex
	phases map[string]*Phase
	stray  atomic.Int64 // requests for no open phase
}

// StartSink listens on a free loopback port.
func StartSink() (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("sink listen: %w", err)
	}
	s := &Sink{URL: "http://" + ln.Addr().String(), phases: map[string]*Phase{}}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close releases slow handlers and stops the server.
func (s *Sink) Close() {
	s.mu.Lock()
	for _, p := range s.phases {
		p.close()
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.srv.Shutdown(ctx) != nil {
		_ = s.srv.Close()
	}
}

// ConsumedHeader carries, in the floor consumer's requests, when it
// received the event from the broker (Unix nanoseconds; the sink and the
// consumer share the host's clock). It is not signed, and the dispatcher
// does not send it.
const ConsumedHeader = "Bench-Consumed"

// Phase records the webhooks of one measured phase.
type Phase struct {
	name    string
	release chan struct{} // closed when the phase ends; frees slow handlers
	once    sync.Once
	arrived atomic.Int64 // first arrivals of healthy endpoints

	mu       sync.Mutex
	hooks    map[int]*standardwebhooks.Webhook
	slow     map[int]time.Duration
	sent     map[string]time.Time // event id → time just before its publish
	seen     map[string]time.Time // "<endpoint>/<event id>" → arrival
	lat      []time.Duration      // healthy endpoints only
	consumed []time.Duration      // publish to ConsumedHeader, where sent
	slowHits int
	dups     int
	badSig   int
	unknown  int
	first    time.Time // first publish
	last     time.Time // last healthy arrival
}

// NewPhase opens a phase named name (one path segment).
func (s *Sink) NewPhase(name string) *Phase {
	p := &Phase{name: name, release: make(chan struct{}), hooks: map[int]*standardwebhooks.Webhook{},
		slow: map[int]time.Duration{}, sent: map[string]time.Time{}, seen: map[string]time.Time{}}
	s.mu.Lock()
	s.phases[name] = p
	s.mu.Unlock()
	return p
}

// EndPhase closes p; later requests for it count as stray.
func (s *Sink) EndPhase(p *Phase) {
	s.mu.Lock()
	delete(s.phases, p.name)
	s.mu.Unlock()
	p.close()
}

// URLFor returns the URL of endpoint i of p.
func (s *Sink) URLFor(p *Phase, i int) string { return fmt.Sprintf("%s/%s/%d", s.URL, p.name, i) }

func (p *Phase) close() { p.once.Do(func() { close(p.release) }) }

// SetEndpoint registers endpoint i's secret; a positive delay makes it
// answer only after that long.
func (p *Phase) SetEndpoint(i int, secret string, delay time.Duration) error {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hooks[i] = wh
	if delay > 0 {
		p.slow[i] = delay
	}
	return nil
}

// Sent records that event id is about to be published.
func (p *Phase) Sent(id string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent[id] = at
	if p.first.IsZero() || at.Before(p.first) {
		p.first = at
	}
}

// Arrived returns the number of distinct deliveries to healthy endpoints.
func (p *Phase) Arrived() int { return int(p.arrived.Load()) }

// PhaseStats is what a phase recorded.
type PhaseStats struct {
	Latencies []time.Duration // publish to arrival, healthy endpoints
	// Consumed is publish to the consumer's receipt, for the deliveries
	// that carry ConsumedHeader (the floor consumer's only).
	Consumed []time.Duration
	Window   time.Duration // first publish to last healthy arrival
	SlowHits int           // requests the slow endpoints received
	Dups     int           // second and later arrivals of a delivery
	BadSig   int           // requests with a missing or wrong signature
	Unknown  int           // arrivals for events not published in the phase
}

// Stats returns a copy of what p recorded so far.
func (p *Phase) Stats() PhaseStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PhaseStats{Latencies: append([]time.Duration(nil), p.lat...), Consumed: append([]time.Duration(nil), p.consumed...), SlowHits: p.slowHits,
		Dups: p.dups, BadSig: p.badSig, Unknown: p.unknown}
	if !p.first.IsZero() && p.last.After(p.first) {
		st.Window = p.last.Sub(p.first)
	}
	return st
}

// splitPath parses "/<phase>/<endpoint>".
func splitPath(path string) (phase string, ep int, ok bool) {
	rest, ok := strings.CutPrefix(path, "/")
	if !ok {
		return "", 0, false
	}
	phase, num, ok := strings.Cut(rest, "/")
	if !ok || phase == "" {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return phase, n, true
}

func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	name, ep, ok := splitPath(r.URL.Path)
	s.mu.Lock()
	p := s.phases[name]
	s.mu.Unlock()
	if !ok || p == nil {
		s.stray.Add(1)
		w.WriteHeader(http.StatusOK)
		return
	}
	delay := p.record(ep, r.Header, body, now)
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-p.release:
			t.Stop()
		case <-r.Context().Done():
			t.Stop()
		}
	}
	w.WriteHeader(http.StatusOK)
}

// record checks and records one request; it returns the endpoint's delay.
func (p *Phase) record(ep int, h http.Header, body []byte, now time.Time) time.Duration {
	id := h.Get(sign.HeaderID)
	p.mu.Lock()
	wh := p.hooks[ep]
	p.mu.Unlock()
	// Verified as a subscriber would, with the Standard Webhooks library;
	// a wrong signature is counted, not refused, so that a signing bug
	// shows in the report instead of turning into retries.
	valid := wh != nil && id != "" && wh.Verify(body, h) == nil
	p.mu.Lock()
	defer p.mu.Unlock()
	if !valid {
		p.badSig++
	}
	if d, ok := p.slow[ep]; ok {
		p.slowHits++
		return d
	}
	k := strconv.Itoa(ep) + "/" + id
	if _, dup := p.seen[k]; dup {
		p.dups++
		return 0
	}
	p.seen[k] = now
	sent, ok := p.sent[id]
	if !ok {
		p.unknown++
		return 0
	}
	p.lat = append(p.lat, now.Sub(sent))
	if c, err := strconv.ParseInt(h.Get(ConsumedHeader), 10, 64); err == nil {
		p.consumed = append(p.consumed, time.Unix(0, c).Sub(sent))
	}
	if now.After(p.last) {
		p.last = now
	}
	p.arrived.Add(1)
	return 0
}

// waitArrivals waits until p has want healthy arrivals, ctx ends or
// timeout passes.
func waitArrivals(ctx context.Context, p *Phase, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for p.Arrived() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("phase %s: %d of %d deliveries arrived within %v", p.name, p.Arrived(), want, timeout)
		}
		if !sleepCtx(ctx, 5*time.Millisecond) {
			return errors.Join(ctx.Err(), fmt.Errorf("phase %s: %d of %d deliveries arrived", p.name, p.Arrived(), want))
		}
	}
	return nil
}

// Reset forgets what p recorded, keeping its endpoints, so that a warm-up
// and the measured runs can share endpoints.
func (p *Phase) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent, p.seen, p.lat, p.consumed = map[string]time.Time{}, map[string]time.Time{}, nil, nil
	p.slowHits, p.dups, p.badSig, p.unknown = 0, 0, 0, 0
	p.first, p.last = time.Time{}, time.Time{}
	p.arrived.Store(0)
}
