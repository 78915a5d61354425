package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// roundTrips counts the commands and pipelines sent to Redis, each one
// network round trip.
type roundTrips struct {
	mu   sync.Mutex
	n    int
	cmds []string
}

func (c *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.add(cmd.Name())
		return next(ctx, cmd)
	}
}

func (c *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.add("pipeline")
		return next(ctx, cmds)
	}
}

func (c *roundTrips) add(name string) {
	c.mu.Lock()
	c.n++
	c.cmds = append(c.cmds, name)
	c.mu.Unlock()
}

func (c *roundTrips) reset() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, cmds := c.n, c.cmds
	c.n, c.cmds = 0, nil
	return n, cmds
}

// Leasing a note whose queue the caller knows (the leaser consumed it from
// that queue) costs one Redis round trip: the lease is on every task's
// path from enqueue to start, so each extra trip adds to its latency.
func TestLeaseInIsOneRoundTrip(t *testing.T) {
	rt := &roundTrips{}
	s, _ := newStoreHooked(t, store.Config{}, rt)
	ctx := context.Background()
	spec := store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond, MaxRetries: 1}
	for _, id := range []string{"warm", "t1"} {
		if _, err := s.Enqueue(ctx, "acme", id, spec); err != nil {
			t.Fatal(err)
		}
	}
	// The first run loads the script (EVALSHA, then EVAL).
	if _, ok, err := s.LeaseIn(ctx, store.Ready{Tenant: "acme", ID: "warm", Gen: 1}, "q", "w", time.Second); err != nil || !ok {
		t.Fatalf("lease warm: %v %v", ok, err)
	}
	rt.reset()
	l, ok, err := s.LeaseIn(ctx, store.Ready{Tenant: "acme", ID: "t1", Gen: 1}, "q", "w", time.Second)
	if err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	if n, cmds := rt.reset(); n != 1 {
		t.Fatalf("lease took %d round trips %v, want 1", n, cmds)
	}
	if l.Spec.Queue != "q" || l.Attempt != 1 {
		t.Fatalf("lease: %+v", l)
	}
	got, err := s.Get(ctx, "acme", "t1")
	if err != nil || got.State != store.Running {
		t.Fatalf("after the lease: %+v %v", got, err)
	}
}

// A note leased with the wrong queue (never the case for the leaser, but
// the script must not trust it) still leases the task under its own queue.
func TestLeaseInWrongQueueFallsBack(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	spec := store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond, MaxRetries: 1}
	if _, err := s.Enqueue(ctx, "acme", "t1", spec); err != nil {
		t.Fatal(err)
	}
	l, ok, err := s.LeaseIn(ctx, store.Ready{Tenant: "acme", ID: "t1", Gen: 1}, "other", "w", time.Second)
	if err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	qs, err := s.Queues(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Name == "other" && q.Running != 0 {
			t.Fatalf("the wrong queue counts the attempt: %+v", qs)
		}
		if q.Name == "q" && q.Running != 1 {
			t.Fatalf("queue q: %+v", q)
		}
	}
	if _, err := s.End(ctx, "acme", "t1", l.Token, store.Outcome{Result: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	// A duplicate of the same note is dropped.
	if _, ok, _ := s.LeaseIn(ctx, store.Ready{Tenant: "acme", ID: "t1", Gen: 1}, "q", "w", time.Second); ok {
		t.Fatal("a duplicate note leased an ended task")
	}
}

// Ending an attempt (complete, fail, expire) costs one Redis round trip:
// like the lease, it is on every task's path.
func TestEndIsOneRoundTrip(t *testing.T) {
	rt := &roundTrips{}
	s, _ := newStoreHooked(t, store.Config{}, rt)
	ctx := context.Background()
	spec := store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond, MaxRetries: 1}
	var leases []*store.Lease
	for _, id := range []string{"warm", "t1", "t2"} {
		if _, err := s.Enqueue(ctx, "acme", id, spec); err != nil {
			t.Fatal(err)
		}
		l, ok, err := s.LeaseIn(ctx, store.Ready{Tenant: "acme", ID: id, Gen: 1}, "q", "w", time.Second)
		if err != nil || !ok {
			t.Fatalf("lease %s: %v %v", id, ok, err)
		}
		leases = append(leases, l)
	}
	// The first run loads the script.
	if _, err := s.End(ctx, "acme", "warm", leases[0].Token, store.Outcome{Result: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	rt.reset()
	st, err := s.End(ctx, "acme", "t1", leases[1].Token, store.Outcome{Result: []byte(`1`)})
	if err != nil || st != store.Succeeded {
		t.Fatalf("end: %v %v", st, err)
	}
	if n, cmds := rt.reset(); n != 1 {
		t.Fatalf("end took %d round trips %v, want 1", n, cmds)
	}
	st, err = s.End(ctx, "acme", "t2", leases[2].Token, store.Outcome{Err: "boom"})
	if err != nil || st != store.Pending {
		t.Fatalf("fail: %v %v", st, err)
	}
	if n, cmds := rt.reset(); n != 1 {
		t.Fatalf("fail took %d round trips %v, want 1", n, cmds)
	}
	if _, err := s.End(ctx, "acme", "t1", leases[1].Token, store.Outcome{Result: []byte(`2`)}); err != store.ErrLeaseLost {
		t.Fatalf("a second end: %v", err)
	}
	if _, err := s.End(ctx, "acme", "nope", 1, store.Outcome{}); err != store.ErrNotFound {
		t.Fatalf("end of a missing task: %v", err)
	}
	qs, err := s.Queues(ctx, "acme")
	if err != nil || len(qs) != 1 || qs[0].Running != 0 {
		t.Fatalf("queues after the ends: %+v %v", qs, err)
	}
}

// Ending several attempts at once costs one Redis round trip, and each
// keeps its own fencing check: a stale token among them is refused alone.
func TestEndAllIsOneRoundTripWithEachFencingCheck(t *testing.T) {
	rt := &roundTrips{}
	s, _ := newStoreHooked(t, store.Config{}, rt)
	ctx := context.Background()
	spec := store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond, MaxRetries: 1}
	ids := []string{"warm", "a", "b", "c"}
	tokens := map[string]int64{}
	for _, id := range ids {
		if _, err := s.Enqueue(ctx, "acme", id, spec); err != nil {
			t.Fatal(err)
		}
		tokens[id] = lease(t, s, "acme", id, 1).Token
	}
	// The first run loads the script (and may dial).
	if _, errs := s.EndAll(ctx, []store.EndItem{{Tenant: "acme", ID: "warm", Token: tokens["warm"], Outcome: store.Outcome{Result: []byte(`0`)}}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	rt.reset()
	states, errs := s.EndAll(ctx, []store.EndItem{
		{Tenant: "acme", ID: "a", Token: tokens["a"], Outcome: store.Outcome{Result: []byte(`"a"`)}},
		{Tenant: "acme", ID: "b", Token: tokens["b"] + 1, Outcome: store.Outcome{Result: []byte(`"stale"`)}},
		{Tenant: "acme", ID: "c", Token: tokens["c"], Outcome: store.Outcome{Err: "boom", NoRetry: true}},
		{Tenant: "acme", ID: "gone", Token: 1, Outcome: store.Outcome{Result: []byte(`1`)}},
	})
	if n, cmds := rt.reset(); n != 1 {
		t.Fatalf("EndAll of 4 took %d round trips %v, want 1", n, cmds)
	}
	if states[0] != store.Succeeded || errs[0] != nil {
		t.Errorf("a: %q %v", states[0], errs[0])
	}
	if !errors.Is(errs[1], store.ErrLeaseLost) {
		t.Errorf("b with a stale token: %q %v, want ErrLeaseLost", states[1], errs[1])
	}
	if states[2] != store.Failed || errs[2] != nil {
		t.Errorf("c: %q %v", states[2], errs[2])
	}
	if !errors.Is(errs[3], store.ErrNotFound) {
		t.Errorf("gone: %v, want ErrNotFound", errs[3])
	}
	if got, err := s.Get(ctx, "acme", "a"); err != nil || got.State != store.Succeeded || string(got.Result) != `"a"` {
		t.Errorf("a after: %+v %v", got, err)
	}
	if got, err := s.Get(ctx, "acme", "b"); err != nil || got.State != store.Running {
		t.Errorf("b after: %+v %v", got, err)
	}
}

// After Redis lost its scripts (NOSCRIPT), EndAll still ends every item.
func TestEndAllLoadsTheScriptAgain(t *testing.T) {
	ns := &redistest.NoScriptOnce{}
	s, _ := newStoreHooked(t, store.Config{}, ns)
	ctx := context.Background()
	spec := store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond, MaxRetries: 1}
	var items []store.EndItem
	for _, id := range []string{"a", "b"} {
		if _, err := s.Enqueue(ctx, "acme", id, spec); err != nil {
			t.Fatal(err)
		}
		items = append(items, store.EndItem{Tenant: "acme", ID: id, Token: lease(t, s, "acme", id, 1).Token, Outcome: store.Outcome{Result: []byte(`1`)}})
	}
	states, errs := s.EndAll(ctx, items)
	if !ns.Hit() {
		t.Fatal("the hook did not answer NOSCRIPT")
	}
	for i := range items {
		if errs[i] != nil || states[i] != store.Succeeded {
			t.Errorf("%s: %q %v", items[i].ID, states[i], errs[i])
		}
	}
}
