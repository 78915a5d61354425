package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

// Concurrent write-behind writes to one key: whatever the interleaving, the
// cached value is the write the origin will get (the last pending one),
// never an older one.
func TestWriteBehindConcurrentWritesKeepCacheAndPendingInStep(t *testing.T) {
	h := newHarness(t, 1, false)
	c := h.replicas[0]
	c.Writes.Pub = nopPublisher{}
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "write_behind", OriginUrl: h.url("/users/{key}")})
	for round := range 40 {
		key := fmt.Sprint("k", round)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := put(c, "acme", "users", key, fmt.Sprint("v", w)); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		rec, err := c.Namespaces.Lookup(tenantCtx("acme"), "acme", "users")
		if err != nil {
			t.Fatal(err)
		}
		pending, ok, err := c.Writes.PendingValue(tenantCtx("acme"), rec, key)
		if err != nil || !ok {
			t.Fatalf("pending value of %s: %v %v", key, ok, err)
		}
		e, err := get(c, "acme", "users", key)
		if err != nil {
			t.Fatal(err)
		}
		if string(e.GetValue()) != string(pending) {
			t.Fatalf("round %d: the cache holds %q but the origin will get %q", round, e.GetValue(), pending)
		}
	}
}

// Two write-through writes to one key whose origin writes and cache stores
// land in opposite orders: the cache must not be left holding the value
// the origin overwrote.
func TestWriteThroughRacingWritesDoNotLeaveCacheOlder(t *testing.T) {
	h := newHarness(t, 1, false)
	var mu sync.Mutex
	current := "none"
	releaseA := make(chan struct{})
	gotA := make(chan struct{})
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			mu.Lock()
			fmt.Fprint(w, current)
			mu.Unlock()
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		current = string(b)
		mu.Unlock()
		if string(b) == "A" {
			// A is applied at the origin, but its answer is held until B
			// has been written and cached.
			close(gotA)
			<-releaseA
		}
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "write_through", OriginUrl: h.url("/users/{key}")})

	errA := make(chan error, 1)
	go func() { _, err := put(c, "acme", "users", "1", "A"); errA <- err }()
	<-gotA
	if _, err := put(c, "acme", "users", "1", "B"); err != nil {
		t.Fatal(err)
	}
	close(releaseA)
	if err := <-errA; err != nil {
		t.Fatal(err)
	}
	// The origin holds B.
	e, err := get(c, "acme", "users", "1")
	if err != nil {
		t.Fatal(err)
	}
	if string(e.GetValue()) != "B" {
		t.Fatalf("cache answers %q, the origin holds %q", e.GetValue(), "B")
	}
}

// nopPublisher accepts every message and delivers none: the writes stay
// pending.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, string, amqp.Publishing) error { return nil }

// A write-behind write whose origin is slower than the key's lock: the lock
// is kept while the write runs, so no other consumer writes the same key at
// the same time.
func TestWriteBehindLockOutlivesSlowOrigin(t *testing.T) {
	h := newHarness(t, 2, true)
	var inFlight, most atomic.Int64
	var rec recorder
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(2500 * time.Millisecond)
		rec.record(r)
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "write_behind", OriginUrl: h.url("/users/{key}")})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range h.replicas {
		r.Writes.LockTTL = 300 * time.Millisecond
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.RunWrites(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, v := range []string{"v1", "v2", "v3"} {
		if _, err := put(c, "acme", "users", "1", v); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 60*time.Second, "an empty backlog", func() bool {
		p, err := c.API.ListPendingWrites(tenantCtx("acme"), &cachev1.ListPendingWritesRequest{Ns: "users"})
		return err == nil && len(p.GetWrites()) == 0
	})
	if m := most.Load(); m != 1 {
		t.Fatalf("%d origin writes of one key ran at once; want 1", m)
	}
	if got := rec.list(); len(got) == 0 || got[len(got)-1] != "PUT /users/1 v3" {
		t.Fatalf("origin writes %q, want v3 last", got)
	}
}
