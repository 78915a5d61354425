package dedupe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/platform/redisbatch"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
)

// proxiedStore is a Store whose Redis connection goes through a proxy the
// test can freeze and cut.
func proxiedStore(t *testing.T, prefixFrom *Store) (*Store, *rabbittest.Proxy, *redistest.RoundTrips) {
	t.Helper()
	p := rabbittest.NewProxy(t, redisAddr(t))
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, ReadTimeout: time.Minute, WriteTimeout: time.Minute})
	t.Cleanup(func() { rdb.Close() })
	rt := &redistest.RoundTrips{}
	rdb.AddHook(rt)
	return New(rdb, prefixFrom.prefix), p, rt
}

func redisAddr(t *testing.T) string {
	t.Helper()
	s, _ := testStore(t)
	return s.rdb.(*redis.Client).Options().Addr
}

// waitQueued waits until n calls are in the batcher, queued or in flight.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.batch.mu.Lock()
		q := len(s.batch.queue) + s.batch.sending
		s.batch.mu.Unlock()
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", q, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Claims made while a round trip is in flight share the next one.
func TestConcurrentClaimsShareRoundTrips(t *testing.T) {
	base, _ := testStore(t)
	s, proxy, rt := proxiedStore(t, base)
	ctx := context.Background()
	// Load the script and open a connection before counting.
	if _, _, err := s.Claim(ctx, s.Key("warm")); err != nil {
		t.Fatal(err)
	}
	before := rt.N()

	const n = 50
	proxy.Freeze()
	states := make([]State, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _, err := s.Claim(ctx, s.Key("id", fmt.Sprint(i%25)))
			if err != nil {
				t.Error(err)
			}
			states[i] = st
		}()
	}
	// The first calls are held by the frozen proxy, the others queue.
	waitQueued(t, s, n)
	proxy.Thaw()
	wg.Wait()

	if got := rt.N() - before; got > 2 {
		t.Errorf("%d claims took %d round trips, want at most 2", n, got)
	}
	// Each of the 25 ids was claimed exactly once; its twin saw the claim.
	claimed := 0
	for _, st := range states {
		if st == Claimed {
			claimed++
		}
	}
	if claimed != 25 {
		t.Errorf("%d claims won, want 25 (one per id)", claimed)
	}
}

// A Redis outage in the middle of a batch fails every call in it: no work
// runs for any of them, and all of them can be retried once Redis is back.
func TestOutageMidBatchFailsEveryCall(t *testing.T) {
	base, _ := testStore(t)
	s, proxy, _ := proxiedStore(t, base)
	ctx := context.Background()
	if _, _, err := s.Claim(ctx, s.Key("warm")); err != nil {
		t.Fatal(err)
	}

	const n = 40
	var ran atomic.Int64
	work := func(context.Context) error { ran.Add(1); return nil }
	errs := make([]error, n)
	proxy.Freeze()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Do(ctx, s.Key("evt", fmt.Sprint(i)), time.Hour, work)
		}()
	}
	waitQueued(t, s, n)
	proxy.Cut()
	proxy.Thaw()
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrStore) {
			t.Errorf("call %d: err = %v, want ErrStore", i, err)
		}
	}
	if ran.Load() != 0 {
		t.Fatalf("work ran %d times without a claim", ran.Load())
	}

	proxy.Restore()
	for i := range n {
		st, err := s.Do(ctx, s.Key("evt", fmt.Sprint(i)), time.Hour, work)
		if err != nil || st != Claimed {
			t.Fatalf("retry %d: %v %v", i, st, err)
		}
	}
	if ran.Load() != n {
		t.Fatalf("work ran %d times after the outage, want %d", ran.Load(), n)
	}
}

// Two replicas (two clients, two batchers) racing on the same ids still do
// each id's work once.
func TestReplicasRacingDoWorkOnce(t *testing.T) {
	a, rdb := testStore(t)
	other := redis.NewClient(rdb.(*redis.Client).Options())
	t.Cleanup(func() { other.Close() })
	b := New(other, a.prefix)
	ctx := context.Background()

	const ids = 100
	var runs [ids]atomic.Int64
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b, a, b} {
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					_, err := s.Do(ctx, s.Key("race", fmt.Sprint(i)), time.Hour, func(context.Context) error {
						runs[i].Add(1)
						time.Sleep(time.Millisecond)
						return nil
					})
					if !errors.Is(err, ErrInProgress) {
						if err != nil {
							t.Error(err)
						}
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
		}
	}
	wg.Wait()
	for i := range runs {
		if n := runs[i].Load(); n != 1 {
			t.Errorf("id %d: work ran %d times, want 1", i, n)
		}
	}
}

// A caller whose context ends stops waiting for its batch.
func TestCallerContextEndsWait(t *testing.T) {
	base, _ := testStore(t)
	s, proxy, _ := proxiedStore(t, base)
	if _, _, err := s.Claim(context.Background(), s.Key("warm")); err != nil {
		t.Fatal(err)
	}
	proxy.Freeze()
	defer proxy.Thaw()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := s.Claim(ctx, s.Key("slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

// BenchmarkDoParallel is Do (claim, work, confirm) from 64 goroutines per
// core, with round trips shared (batched) and one per script (single).
func BenchmarkDoParallel(b *testing.B) {
	for _, mode := range []string{"batched", "single"} {
		b.Run(mode, func(b *testing.B) {
			s, _ := testStore(b)
			if mode == "single" {
				s.batch = nil
			}
			ctx := context.Background()
			var seq atomic.Int64
			b.SetParallelism(32)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := s.Key("bench", fmt.Sprint(seq.Add(1)))
					if _, err := s.Do(ctx, k, time.Minute, func(context.Context) error { return nil }); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// A script Redis does not have cached (after a restart, or never loaded)
// is sent again with EVAL in the same flush (every script of the store is
// made by redisbatch.NewScript).
func TestBatchLoadsUnknownScript(t *testing.T) {
	s, _ := testStore(t)
	want := fmt.Sprintf("fresh-%d", time.Now().UnixNano())
	script := redisbatch.NewScript(fmt.Sprintf("return %q", want))
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.run(context.Background(), script, nil).Text()
			if err != nil || got != want {
				t.Errorf("got %q %v, want %q", got, err, want)
			}
		}()
	}
	wg.Wait()
}

// Round trips one after the other, as at a moderate request rate, are
// sent by one flushing goroutine: starting one per round trip cost a
// goroutine and its stack growth through the Redis client every time.
func TestSequentialRoundTripsReuseTheFlusher(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	for i := range 20 {
		if _, _, err := s.Claim(ctx, s.Key("seq", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.batch.mu.Lock()
	started := s.batch.started
	s.batch.mu.Unlock()
	if started != 1 {
		t.Errorf("20 sequential claims started %d flushing goroutines, want 1", started)
	}
}

// An idle flusher ends, and the next script starts a new one.
func TestIdleFlusherEnds(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	if _, _, err := s.Claim(ctx, s.Key("idle", "1")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.batch.mu.Lock()
		running := s.batch.running
		s.batch.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the flushing goroutine did not end while idle")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, _, err := s.Claim(ctx, s.Key("idle", "2")); err != nil {
		t.Fatal(err)
	}
	s.batch.mu.Lock()
	defer s.batch.mu.Unlock()
	if s.batch.started != 2 {
		t.Errorf("started %d flushing goroutines, want 2", s.batch.started)
	}
}

// BenchmarkDoSequential is Do one webhook at a time, as at a moderate
// rate: every round trip finds Redis idle, nothing is shared.
func BenchmarkDoSequential(b *testing.B) {
	s, _ := testStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Do(ctx, s.Key("seq", fmt.Sprint(i)), time.Minute, func(context.Context) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
