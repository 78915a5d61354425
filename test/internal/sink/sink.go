// Package sink is a webhook subscriber for end-to-end tests: it verifies
// every request with the public Standard Webhooks library, as a user's
// subscriber would, and records what it accepted by webhook-id.
package sink

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Delivery is one accepted request.
type Delivery struct {
	ID     string
	Path   string
	Header http.Header
	Body   []byte
}

// Sink is a running subscriber.
type Sink struct {
	srv *http.Server
	ln  net.Listener

	mu       sync.Mutex
	secrets  map[string]*standardwebhooks.Webhook // by path
	accepted map[string][]Delivery                // by webhook-id
	counts   map[string]int                       // by webhook-id
	// countOnly keeps counts and drops the deliveries, so that a run of
	// millions of webhooks does not hold every body in memory.
	countOnly bool
	failRate  float64
	rng       *rand.Rand

	requests, failed, rejected atomic.Int64
	lastReject                 atomic.Value // string
}

// Start listens on a loopback port.
func Start() (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sink{ln: ln, secrets: map[string]*standardwebhooks.Webhook{}, accepted: map[string][]Delivery{}, counts: map[string]int{}, rng: rand.New(rand.NewPCG(1, 1))}
	s.srv = &http.Server{Handler: s}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the sink's address followed by path.
func (s *Sink) URL(path string) string { return "http://" + s.ln.Addr().String() + path }

// Close stops the server.
func (s *Sink) Close() { _ = s.srv.Close() }

// SetSecret sets the whsec_ secret that requests to path are verified
// with. Requests to a path without one are refused with 401.
func (s *Sink) SetSecret(path, secret string) error {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return fmt.Errorf("secret for %s: %w", path, err)
	}
	s.mu.Lock()
	s.secrets[path] = wh
	s.mu.Unlock()
	return nil
}

// CountOnly makes the sink count accepted requests by webhook-id without
// keeping them: Counts and Accepted still answer, Get and Find find
// nothing. A soak sends millions of webhooks and only needs the counts.
func (s *Sink) CountOnly() {
	s.mu.Lock()
	s.countOnly = true
	s.mu.Unlock()
}

// FailRate makes that fraction of verified requests answer 503 at random
// (seeded, so a run is repeatable) without being recorded.
func (s *Sink) FailRate(f float64) {
	s.mu.Lock()
	s.failRate = f
	s.mu.Unlock()
}

func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	wh := s.secrets[r.URL.Path]
	s.mu.Unlock()
	if wh == nil {
		s.reject(w, "no secret for "+r.URL.Path)
		return
	}
	if err := wh.Verify(body, r.Header); err != nil {
		s.reject(w, fmt.Sprintf("%s: %v", r.URL.Path, err))
		return
	}
	id := r.Header.Get(standardwebhooks.HeaderWebhookID)
	s.mu.Lock()
	fail := s.failRate > 0 && s.rng.Float64() < s.failRate
	if !fail {
		s.counts[id]++
		if !s.countOnly {
			s.accepted[id] = append(s.accepted[id], Delivery{ID: id, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		}
	}
	s.mu.Unlock()
	if fail {
		s.failed.Add(1)
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sink) reject(w http.ResponseWriter, why string) {
	s.rejected.Add(1)
	s.lastReject.Store(why)
	http.Error(w, why, http.StatusUnauthorized)
}

// Get returns the accepted deliveries of one webhook-id.
func (s *Sink) Get(id string) []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.accepted[id]...)
}

// Find returns the accepted deliveries whose JSON body satisfies match.
func (s *Sink) Find(match func(body map[string]any) bool) []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Delivery
	for _, ds := range s.accepted {
		for _, d := range ds {
			var m map[string]any
			if json.Unmarshal(d.Body, &m) == nil && match(m) {
				out = append(out, d)
			}
		}
	}
	return out
}

// Counts returns, by webhook-id, how often each was accepted.
func (s *Sink) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.counts))
	for id, n := range s.counts {
		out[id] = n
	}
	return out
}

// Accepted returns how many webhook-ids were accepted at least once, and
// how many acceptances were repeats of an id already accepted.
func (s *Sink) Accepted() (ids, repeats int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.counts {
		repeats += n - 1
	}
	return len(s.counts), repeats
}

// Has reports whether the webhook-id was accepted at least once.
func (s *Sink) Has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[id] > 0
}

// Stats returns requests seen, answered 503 on purpose and refused for a
// bad signature, and the reason of the last refusal.
func (s *Sink) Stats() (requests, failed, rejected int64, lastReject string) {
	why, _ := s.lastReject.Load().(string)
	return s.requests.Load(), s.failed.Load(), s.rejected.Load(), why
}

// IDs lists the accepted webhook-ids, sorted, for messages.
func (s *Sink) IDs() string {
	s.mu.Lock()
	ids := make([]string, 0, len(s.counts))
	for id := range s.counts {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	sort.Strings(ids)
	return strings.Join(ids, ", ")
}
