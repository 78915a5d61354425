package message

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// gateFirst holds the first transaction until released and counts
// transactions.
type gateFirst struct {
	release   chan struct{}
	pipelines atomic.Int32
}

func (g *gateFirst) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (g *gateFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (g *gateFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || cmds[0].Name() != "multi" {
			return next(ctx, cmds) // a new connection's handshake
		}
		if g.pipelines.Add(1) == 1 {
			<-g.release
		}
		return next(ctx, cmds)
	}
}

// Settles arriving while a round trip is out share the next one, and each
// is recorded whole; a write whose own command fails gets the error
// alone.
func TestConcurrentSettlesShareARoundTrip(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	const n = 40
	for i := range n {
		if _, _, err := s.RecordFor(ctx, "acme", newMessage(fmt.Sprintf("b%d", i)), []string{"ep_1"}); err != nil {
			t.Fatal(err)
		}
	}
	// A key of the wrong type makes the one write touching it fail.
	bad := s.prefix + ":wrongtype"
	if err := rdb.Set(ctx, bad, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	gated := testenv.Redis(t, s.prefix)
	if err := gated.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// Loaded now, so that no round trip is spent loading it below.
	if err := settleScript.Load(ctx, gated).Err(); err != nil {
		t.Fatal(err)
	}
	g := &gateFirst{release: make(chan struct{})}
	gated.AddHook(g)
	bs := New(gated, s.prefix, retention)

	errs := make([]error, n)
	var wg sync.WaitGroup
	settle := func(i int) {
		defer wg.Done()
		var ops []Op
		if i == n-1 {
			ops = append(ops, func(ctx context.Context, pipe redis.Pipeliner) { pipe.LPush(ctx, bad, "y") })
		}
		o := Outcome{Attempt: &dispatcherv1.Attempt{EndpointId: "ep_1", Number: 1}, State: Delivery{Status: StatusDelivered, Attempts: 1}, At: time.Now()}
		errs[i] = bs.Settle(ctx, "acme", fmt.Sprintf("b%d", i), "ep_1", o, ops...)
	}
	wg.Add(1)
	go settle(0)
	testenv.WaitFor(t, 10*time.Second, "first round trip out", func() bool { return g.pipelines.Load() == 1 })
	for i := 1; i < n; i++ {
		wg.Add(1)
		go settle(i)
	}
	testenv.WaitFor(t, 10*time.Second, "the others queued", func() bool { return bs.batch.Len() == n-1 })
	close(g.release)
	wg.Wait()
	if got := g.pipelines.Load(); got != 2 {
		t.Errorf("%d round trips for %d concurrent settles, want 2", got, n)
	}
	for i, err := range errs {
		if (err != nil) != (i == n-1) {
			t.Errorf("settle %d: %v", i, err)
		}
	}
	for i := range n - 1 {
		d, err := s.Delivery(ctx, "acme", fmt.Sprintf("b%d", i), "ep_1")
		if err != nil || d.Status != StatusDelivered {
			t.Errorf("delivery %d: %+v, %v; want delivered", i, d, err)
		}
		if atts, _, err := s.Attempts(ctx, "acme", fmt.Sprintf("b%d", i), 10, ""); len(atts) != 1 {
			t.Errorf("attempt log %d: %d entries (%v), want 1", i, len(atts), err)
		}
	}
}

// Records are sent as EVALSHA in a shared pipeline; one that finds the
// script missing loads it again instead of failing.
func TestRecordLoadsALostScript(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	rdb := testenv.Redis(t, s.prefix)
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	h := &redistest.NoScriptOnce{}
	rdb.AddHook(h)
	created, err := New(rdb, s.prefix, retention).Record(ctx, "acme", newMessage("lost"))
	if err != nil || !created || !h.Hit() {
		t.Fatalf("Record = %v, %v (NOSCRIPT injected: %v); want a new message", created, err, h.Hit())
	}
}

// Settles send their scripts by digest; after Redis has lost them (SCRIPT
// FLUSH, on a server of the test's own) a settle still records its
// attempt and the state it led to, once.
func TestSettleAfterScriptsFlushed(t *testing.T) {
	t.Parallel()
	rdb := redistest.Private(t)
	ctx := context.Background()
	s := New(rdb, "flushed", retention)
	for i := range 6 {
		id := fmt.Sprintf("f%d", i)
		if _, _, err := s.RecordFor(ctx, "acme", newMessage(id), []string{"ep_1"}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		o := Outcome{Attempt: &dispatcherv1.Attempt{EndpointId: "ep_1", Number: 1}, State: Delivery{Status: StatusDelivered, Attempts: 1}, At: time.Now()}
		if err := s.Settle(ctx, "acme", id, "ep_1", o); err != nil {
			t.Fatalf("settle %d: %v", i, err)
		}
		if d, err := s.Delivery(ctx, "acme", id, "ep_1"); err != nil || d.Status != StatusDelivered {
			t.Fatalf("delivery %d: %+v, %v; want delivered", i, d, err)
		}
		if atts, _, err := s.Attempts(ctx, "acme", id, 10, ""); len(atts) != 1 {
			t.Fatalf("attempt log %d: %d entries (%v), want 1", i, len(atts), err)
		}
	}
}
