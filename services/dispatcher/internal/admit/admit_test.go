package admit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

const retention = time.Hour

// replicas returns two gates over one Redis prefix of the test's own: two
// dispatcher replicas as far as admission is concerned.
func replicas(t *testing.T) (*Gate, *Gate) {
	t.Helper()
	prefix := testenv.KeyPrefix(testenv.ID())
	a := New(testenv.Redis(t, prefix), prefix, retention)
	b := New(testenv.Redis(t, prefix), prefix, retention)
	return a, b
}

// attempt is a request for msg at ep with a fresh token.
func attempt(ep, msg string, maxInFlight, rate int, lease time.Duration) Request {
	return Request{Endpoint: ep, Message: msg, Token: uuid.NewString(), Lease: lease, MaxInFlight: maxInFlight, Rate: rate}
}

func admitOK(t *testing.T, g *Gate, r Request, want Verdict) time.Duration {
	t.Helper()
	v, wait, err := g.Admit(context.Background(), &r)
	if err != nil {
		t.Fatalf("admit %s: %v", r.Message, err)
	}
	if v != want {
		t.Fatalf("admit %s: got %v, want %v", r.Message, v, want)
	}
	return wait
}

func finish(t *testing.T, g *Gate, r Request, delivered bool) {
	t.Helper()
	if err := g.Finish(context.Background(), r, delivered); err != nil {
		t.Fatalf("finish %s: %v", r.Message, err)
	}
}

func TestDeliveredMarkerShortCircuits(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ctx := context.Background()
	ep := uuid.NewString()

	first := attempt(ep, "m1", 10, 0, time.Minute)
	admitOK(t, a, first, Go)
	if d, _ := a.Delivered(ctx, ep, "m1"); d {
		t.Fatal("marked delivered before Finish")
	}
	finish(t, a, first, true)
	if d, err := b.Delivered(ctx, ep, "m1"); err != nil || !d {
		t.Fatalf("Delivered = %v, %v after a delivered Finish", d, err)
	}
	// A second copy of the task, on the other replica, is not attempted.
	admitOK(t, b, attempt(ep, "m1", 10, 0, time.Minute), Done)
	// The marker lives for the retention period, not forever.
	ttl := a.rdb.PTTL(ctx, a.keys(ep, "m1")[0]).Val()
	if ttl <= retention-time.Minute || ttl > retention {
		t.Fatalf("delivered marker TTL %v, want about %v", ttl, retention)
	}
	// The same message to another endpoint is unaffected.
	admitOK(t, a, attempt(uuid.NewString(), "m1", 10, 0, time.Minute), Go)

	// A failed attempt sets no marker.
	failed := attempt(ep, "m2", 10, 0, time.Minute)
	admitOK(t, a, failed, Go)
	finish(t, a, failed, false)
	retry := attempt(ep, "m2", 10, 0, time.Minute)
	retry.Attempts = 1
	admitOK(t, b, retry, Go)

	// An explicit resend forgets the marker.
	if err := b.Forget(ctx, ep, "m1"); err != nil {
		t.Fatal(err)
	}
	admitOK(t, a, attempt(ep, "m1", 10, 0, time.Minute), Go)
}

func TestLockKeepsCopiesOfOneTaskApart(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()

	one := attempt(ep, "m", 10, 0, time.Minute)
	admitOK(t, a, one, Go)
	admitOK(t, b, attempt(ep, "m", 10, 0, time.Minute), Busy)
	admitOK(t, b, attempt(ep, "other", 10, 0, time.Minute), Go) // other messages proceed
	finish(t, a, one, false)
	next := attempt(ep, "m", 10, 0, time.Minute)
	next.Attempts = 1
	admitOK(t, b, next, Go)

	// Many copies racing on both replicas: exactly one gets through.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		g := a
		if i%2 == 1 {
			g = b
		}
		wg.Go(func() {
			r := attempt(ep, "race", 100, 0, time.Minute)
			v, _, err := g.Admit(context.Background(), &r)
			if err != nil {
				t.Error(err)
			}
			if v == Go {
				wins.Add(1)
			} else if v != Busy {
				t.Errorf("racing copy: got %v, want go or busy", v)
			}
		})
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d copies of one task admitted at once, want 1", n)
	}
}

// TestStaleFinishKeepsTheNewLock: an attempt whose lease ran out (a slow
// replica) must not release the lock or lease of the copy that took over.
func TestStaleFinishKeepsTheNewLock(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()

	a.LockOutlives, b.LockOutlives = 0, 0
	stale := attempt(ep, "m", 1, 0, 100*time.Millisecond)
	admitOK(t, a, stale, Go)
	time.Sleep(150 * time.Millisecond)
	current := attempt(ep, "m", 1, 0, time.Minute)
	admitOK(t, b, current, Go)
	finish(t, a, stale, false)
	admitOK(t, a, attempt(ep, "m", 1, 0, time.Minute), Busy)
	admitOK(t, a, attempt(ep, "n", 1, 0, time.Minute), Full)
	finish(t, b, current, true)
	admitOK(t, a, attempt(ep, "m", 1, 0, time.Minute), Done)
	admitOK(t, a, attempt(ep, "n", 1, 0, time.Minute), Go)
}

func TestMaxInFlightHonouredAndReleased(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()

	r1 := attempt(ep, "m1", 2, 0, time.Minute)
	r2 := attempt(ep, "m2", 2, 0, time.Minute)
	admitOK(t, a, r1, Go)
	admitOK(t, b, r2, Go)
	admitOK(t, a, attempt(ep, "m3", 2, 0, time.Minute), Full)
	admitOK(t, b, attempt(ep, "m3", 2, 0, time.Minute), Full)
	// Another endpoint has slots of its own.
	admitOK(t, a, attempt(uuid.NewString(), "m3", 2, 0, time.Minute), Go)
	finish(t, b, r1, false) // finished by whichever replica: the lease is shared
	admitOK(t, a, attempt(ep, "m3", 2, 0, time.Minute), Go)
	admitOK(t, a, attempt(ep, "m4", 2, 0, time.Minute), Full)

	// 0 means at least one.
	solo := uuid.NewString()
	admitOK(t, a, attempt(solo, "x", 0, 0, time.Minute), Go)
	admitOK(t, b, attempt(solo, "y", 0, 0, time.Minute), Full)
}

func TestMaxInFlightUnderConcurrency(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()
	const limit = 3
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 40 {
		g := a
		if i%2 == 1 {
			g = b
		}
		wg.Go(func() {
			r := attempt(ep, fmt.Sprintf("m%d", i), limit, 0, time.Minute)
			v, _, err := g.Admit(context.Background(), &r)
			if err != nil {
				t.Error(err)
			}
			if v == Go {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if n := admitted.Load(); n != limit {
		t.Fatalf("%d attempts admitted at once, want %d", n, limit)
	}
}

// TestLeasesExpire: a replica killed mid-attempt never calls Finish; its
// slot and its task lock come free after the lease (and LockOutlives).
func TestLeasesExpire(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()
	const lease = 150 * time.Millisecond
	a.LockOutlives = 0

	admitOK(t, a, attempt(ep, "m1", 1, 0, lease), Go) // then "killed"
	admitOK(t, b, attempt(ep, "m2", 1, 0, time.Minute), Full)
	admitOK(t, b, attempt(ep, "m1", 1, 0, time.Minute), Busy)
	time.Sleep(lease + 50*time.Millisecond)
	admitOK(t, b, attempt(ep, "m1", 1, 0, time.Minute), Go)
}

// TestLockOutlivesTheLease: the lock of an attempt that never finished
// (its write after a success still being retried) stays LockOutlives
// after the lease, while its in-flight slot is freed with the lease.
func TestLockOutlivesTheLease(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()
	const lease = 150 * time.Millisecond
	a.LockOutlives = time.Hour

	admitOK(t, a, attempt(ep, "m1", 1, 0, lease), Go) // its write is being retried
	time.Sleep(lease + 50*time.Millisecond)
	admitOK(t, b, attempt(ep, "m1", 2, 0, time.Minute), Busy)
	admitOK(t, b, attempt(ep, "m2", 2, 0, time.Minute), Go)
}

// TestShortLeaseKeepsLongerOnes: leases of one endpoint can differ (they
// follow its timeout, which can be changed); a short one must not expire
// the slots of longer ones still running.
func TestShortLeaseKeepsLongerOnes(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()

	admitOK(t, a, attempt(ep, "long", 2, 0, 10*time.Second), Go)
	admitOK(t, b, attempt(ep, "short", 2, 0, 10*time.Millisecond), Go)
	time.Sleep(1100 * time.Millisecond) // past short lease + the set's 1 s margin
	admitOK(t, a, attempt(ep, "next", 2, 0, time.Minute), Go)
	admitOK(t, b, attempt(ep, "over", 2, 0, time.Minute), Full)
}

func TestRateLimitSharedByReplicas(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()
	const rate = 4 // tokens per second, burst of 4
	perToken := time.Second / rate

	// The burst is spent across both replicas, finished or not.
	for i := range rate {
		g := []*Gate{a, b}[i%2]
		r := attempt(ep, fmt.Sprintf("m%d", i), 100, rate, time.Minute)
		admitOK(t, g, r, Go)
		finish(t, g, r, true)
	}
	wait := admitOK(t, a, attempt(ep, "over", 100, rate, time.Minute), Limited)
	if wait <= 0 || wait > perToken {
		t.Fatalf("limited with wait %v, want in (0, %v]", wait, perToken)
	}
	// Asking again early keeps the reservation, on any replica.
	admitOK(t, b, attempt(ep, "over", 100, rate, time.Minute), Limited)
	// A refused attempt takes no lock or slot: the message goes as soon
	// as its reserved token is due.
	time.Sleep(wait + 20*time.Millisecond)
	admitOK(t, b, attempt(ep, "over", 100, rate, time.Minute), Go)
	admitOK(t, a, attempt(ep, "again", 100, rate, time.Minute), Limited)

	// After the debt is paid and a full second more, the bucket is full
	// again, never fuller.
	time.Sleep(time.Second + perToken + 50*time.Millisecond)
	for i := range rate {
		admitOK(t, []*Gate{a, b}[i%2], attempt(ep, fmt.Sprintf("r%d", i), 100, rate, time.Minute), Go)
	}
	admitOK(t, a, attempt(ep, "r-over", 100, rate, time.Minute), Limited)

	// Endpoints have buckets of their own, and 0 means unlimited.
	admitOK(t, a, attempt(uuid.NewString(), "m", 100, rate, time.Minute), Go)
	free := uuid.NewString()
	for i := range 50 {
		admitOK(t, b, attempt(free, fmt.Sprintf("m%d", i), 100, 0, time.Minute), Go)
	}
}

// TestFullOrBusyTakesNoToken: only an attempt that starts spends a token.
func TestFullOrBusyTakesNoToken(t *testing.T) {
	t.Parallel()
	a, _ := replicas(t)
	ep := uuid.NewString()
	held := attempt(ep, "m", 1, 1000, time.Minute)
	admitOK(t, a, held, Go)
	for range 20 {
		admitOK(t, a, attempt(ep, "m", 1, 1000, time.Minute), Busy)
		admitOK(t, a, attempt(ep, "n", 1, 1000, time.Minute), Full)
	}
	bucket := a.rdb.HGet(context.Background(), a.keys(ep, "")[3], "t").Val()
	if bucket != "999" {
		t.Fatalf("bucket holds %q tokens after one admitted attempt of 1000, want 999", bucket)
	}
}

// TestLimitedReservesToken: a rate-limited attempt is given the time of
// the token it reserved, each waiting attempt a later one, and comes in
// when it returns then; attempts that wait do not come back one per token
// interval but once each.
func TestLimitedReservesToken(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()
	const rate = 2
	perToken := time.Second / rate
	for i := range rate {
		admitOK(t, a, attempt(ep, fmt.Sprintf("burst%d", i), 100, rate, time.Minute), Go)
	}
	var last time.Duration
	for i := range 5 {
		wait := admitOK(t, []*Gate{a, b}[i%2], attempt(ep, fmt.Sprintf("w%d", i), 100, rate, time.Minute), Limited)
		if wait <= last || wait > time.Duration(i+1)*perToken+50*time.Millisecond {
			t.Fatalf("waiting attempt %d told to wait %v after %v", i, wait, last)
		}
		last = wait
	}
	// Each waiting message comes in once its reserved time has come,
	// although the bucket is still in debt for the ones after it.
	time.Sleep(last + 20*time.Millisecond)
	for i := range 5 {
		admitOK(t, []*Gate{b, a}[i%2], attempt(ep, fmt.Sprintf("w%d", i), 100, rate, time.Minute), Go)
	}
	// A newcomer queues behind them.
	admitOK(t, a, attempt(ep, "late", 100, rate, time.Minute), Limited)
}

// TestCancelGivesTokenBack: an attempt its breaker refused gives its token
// back, so refusals do not use up the endpoint's rate.
func TestCancelGivesTokenBack(t *testing.T) {
	t.Parallel()
	a, _ := replicas(t)
	ep := uuid.NewString()
	first := attempt(ep, "m1", 10, 1, time.Minute)
	admitOK(t, a, first, Go)
	if err := a.Cancel(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	admitOK(t, a, attempt(ep, "m1", 10, 1, time.Minute), Go)
	admitOK(t, a, attempt(ep, "m2", 10, 1, time.Minute), Limited)
}

// TestSecondCopyIsStale: once an attempt was made, a copy of the task that
// has not seen it (a second task from a replayed fan-out) is stale, so
// two copies cannot make two retry chains; a resend starts afresh.
func TestSecondCopyIsStale(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ep := uuid.NewString()
	first := attempt(ep, "m", 10, 0, time.Minute)
	admitOK(t, a, first, Go)
	finish(t, a, first, false)
	admitOK(t, b, attempt(ep, "m", 10, 0, time.Minute), Stale)
	retry := attempt(ep, "m", 10, 0, time.Minute)
	retry.Attempts = 1
	admitOK(t, b, retry, Go)
	finish(t, b, retry, false)
	if err := a.Forget(context.Background(), ep, "m"); err != nil {
		t.Fatal(err)
	}
	admitOK(t, a, attempt(ep, "m", 10, 0, time.Minute), Go)
}

func TestVerdictString(t *testing.T) {
	for v, want := range map[Verdict]string{Go: "go", Done: "done", Busy: "busy", Full: "full", Limited: "limited", Stale: "stale"} {
		if v.String() != want {
			t.Errorf("%d: %q, want %q", v, v.String(), want)
		}
	}
}

// Admissions are sent as EVALSHA in a shared pipeline; one that finds the
// script missing loads it again instead of failing.
func TestAdmitLoadsALostScript(t *testing.T) {
	t.Parallel()
	prefix := testenv.KeyPrefix(testenv.ID())
	rdb := testenv.Redis(t, prefix)
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	h := &redistest.NoScriptOnce{}
	rdb.AddHook(h)
	g := New(rdb, prefix, retention)
	admitOK(t, g, attempt(uuid.NewString(), "m", 1, 0, time.Minute), Go)
	if !h.Hit() {
		t.Fatal("the NOSCRIPT answer was not injected")
	}
}

// TestDeliveredKeepsNoAttemptCount: once delivered, the delivered marker
// alone refuses every later copy (it is checked before the count), so the
// attempt count is not kept for the retention period beside it: one key
// fewer per delivered message, and a retried delivery drops the count its
// failures left.
func TestDeliveredKeepsNoAttemptCount(t *testing.T) {
	t.Parallel()
	a, b := replicas(t)
	ctx := context.Background()
	ep := uuid.NewString()
	count := func(msg string) int64 { return a.rdb.Exists(ctx, a.keys(ep, msg)[5]).Val() }

	first := attempt(ep, "m1", 10, 0, time.Minute)
	admitOK(t, a, first, Go)
	finish(t, a, first, true)
	if n := count("m1"); n != 0 {
		t.Fatalf("attempt count kept after a delivered first attempt (%d key)", n)
	}
	admitOK(t, b, attempt(ep, "m1", 10, 0, time.Minute), Done)

	failed := attempt(ep, "m2", 10, 0, time.Minute)
	admitOK(t, a, failed, Go)
	finish(t, a, failed, false)
	if n := count("m2"); n != 1 {
		t.Fatalf("no attempt count after a failed attempt (%d keys)", n)
	}
	retry := attempt(ep, "m2", 10, 0, time.Minute)
	retry.Attempts = 1
	admitOK(t, b, retry, Go)
	finish(t, b, retry, true)
	if n := count("m2"); n != 0 {
		t.Fatalf("attempt count kept after a retry delivered (%d key)", n)
	}
	// The copy that has seen no attempt is refused as delivered, not
	// taken for a fresh task.
	admitOK(t, a, attempt(ep, "m2", 10, 0, time.Minute), Done)
}
