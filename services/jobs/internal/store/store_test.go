package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newStore(t *testing.T) (*store.Store, *clock) {
	t.Helper()
	return newStoreWith(t, store.Config{})
}

func newStoreWith(t *testing.T, cfg store.Config) (*store.Store, *clock) {
	t.Helper()
	return newStoreHooked(t, cfg, nil)
}

// newStoreHooked is newStoreWith with hook (if not nil) on the Redis
// client, to watch the commands the store sends.
func newStoreHooked(t *testing.T, cfg store.Config, hook redis.Hook) (*store.Store, *clock) {
	t.Helper()
	rdb, err := redisconn.Open(jobstest.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		rdb.AddHook(hook)
	}
	prefix := fmt.Sprintf("hookyard:test:jobs:store:%x%04x", time.Now().UnixNano(), rand.N(1<<16))
	c := &clock{t: time.Now()}
	cfg.Prefix, cfg.Now = prefix, c.Now
	s := store.New(rdb, cfg)
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, "{"+prefix+"}:*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	return s, c
}

func lease(t *testing.T, s *store.Store, tenant, id string, gen int64) *store.Lease {
	t.Helper()
	l, ok, err := s.Lease(context.Background(), store.Ready{Tenant: tenant, ID: id, Gen: gen}, "w", 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("lease %s gen %d: %v %v", id, gen, ok, err)
	}
	return l
}

// An outcome that arrives after the hard deadline is refused even when no
// reaper has ended the attempt yet.
func TestOutcomeAfterHardDeadlineIsRefused(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, "acme", "t1", store.Spec{Name: "x", Queue: "q", HardLimit: time.Second, MaxRetries: 1, Backoff: time.Second, BackoffMax: time.Second}); err != nil {
		t.Fatal(err)
	}
	l := lease(t, s, "acme", "t1", 1)
	c.Add(1500 * time.Millisecond)
	if _, err := s.End(ctx, "acme", "t1", l.Token, store.Outcome{Result: []byte(`1`)}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("late complete: %v, want ErrLeaseLost", err)
	}
	got, _ := s.Get(ctx, "acme", "t1")
	if got.State != store.Pending || got.Log[0].Error != "hard time limit exceeded" {
		t.Fatalf("after the late complete: %s %+v", got.State, got.Log)
	}
}

// A note delivered twice (or an old generation) never starts a second
// attempt.
func TestDuplicateAndStaleNotesAreDropped(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, "acme", "t1", store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond, MaxRetries: 3}); err != nil {
		t.Fatal(err)
	}
	l := lease(t, s, "acme", "t1", 1)
	if _, ok, _ := s.Lease(ctx, store.Ready{Tenant: "acme", ID: "t1", Gen: 1}, "w", time.Second); ok {
		t.Fatal("a duplicate note leased a running task")
	}
	if st, err := s.End(ctx, "acme", "t1", l.Token, store.Outcome{Err: "boom"}); err != nil || st != store.Pending {
		t.Fatalf("fail: %s %v", st, err)
	}
	if _, ok, _ := s.Lease(ctx, store.Ready{Tenant: "acme", ID: "t1", Gen: 1}, "w", time.Second); ok {
		t.Fatal("the first generation's note leased the retry")
	}
	lease(t, s, "acme", "t1", 2)
}

// Retries spend attempts up to maxRetries; "retry later" does not.
func TestRetryBudget(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, "acme", "t1", store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond, MaxRetries: 1}); err != nil {
		t.Fatal(err)
	}
	l := lease(t, s, "acme", "t1", 1)
	if st, _ := s.End(ctx, "acme", "t1", l.Token, store.Outcome{Err: "later", RetryAfter: time.Millisecond}); st != store.Pending {
		t.Fatalf("retry later: %s", st)
	}
	l = lease(t, s, "acme", "t1", 2)
	if st, _ := s.End(ctx, "acme", "t1", l.Token, store.Outcome{Err: "one"}); st != store.Pending {
		t.Fatalf("first failure: %s", st)
	}
	l = lease(t, s, "acme", "t1", 3)
	if st, _ := s.End(ctx, "acme", "t1", l.Token, store.Outcome{Err: "two"}); st != store.Failed {
		t.Fatalf("second failure: %s, want failed", st)
	}
	got, _ := s.Get(ctx, "acme", "t1")
	if got.Attempts != 3 || got.Error != "two" || len(got.Log) != 3 {
		t.Fatalf("task %+v", got)
	}
}

type recorder struct {
	mu    sync.Mutex
	ended []string
}

func (r *recorder) Enqueued(string, string)               {}
func (r *recorder) Started(string, string, time.Duration) {}
func (r *recorder) Ended(q, n, state string, _ time.Duration, expired bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = append(r.ended, fmt.Sprintf("%s/%s/%s/%v", q, n, state, expired))
}

// Metrics see every end, including one refused at the hard deadline.
func TestObserverSeesEveryEnd(t *testing.T) {
	_, c := newStore(t)
	rdb, _ := redisconn.Open(jobstest.RedisURL())
	defer rdb.Close()
	rec := &recorder{}
	prefix := fmt.Sprintf("hookyard:test:jobs:obs:%x", rand.Uint64())
	s := store.New(rdb, store.Config{Prefix: prefix, Now: c.Now, Observer: rec})
	defer func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, "{"+prefix+"}:*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	}()
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, "acme", "t1", store.Spec{Name: "x", Queue: "q", HardLimit: time.Second, MaxRetries: 1, Backoff: time.Millisecond, BackoffMax: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	l := lease(t, s, "acme", "t1", 1)
	c.Add(2 * time.Second)
	if _, err := s.End(ctx, "acme", "t1", l.Token, store.Outcome{}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatal(err)
	}
	l = lease(t, s, "acme", "t1", 2)
	if _, err := s.End(ctx, "acme", "t1", l.Token, store.Outcome{Err: "x"}); err != nil {
		t.Fatal(err)
	}
	want := []string{"q/x/pending/true", "q/x/failed/false"}
	if fmt.Sprint(rec.ended) != fmt.Sprint(want) {
		t.Fatalf("ended %v, want %v", rec.ended, want)
	}
}

// A unique key admits one pending or running task and is released on
// every end: success, failure, cancel.
func TestUniqueKeyReleasedOnEveryEnd(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	spec := store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond, UniqueKey: "k", UniqueTTL: time.Hour}
	enqueue := func(id string) error { _, err := s.Enqueue(ctx, "acme", id, spec); return err }
	var u *store.UniqueError
	if err := enqueue("a"); err != nil {
		t.Fatal(err)
	}
	if err := enqueue("b"); !errors.As(err, &u) || u.Holder != "a" {
		t.Fatalf("second while pending: %v", err)
	}
	if _, err := s.Cancel(ctx, "acme", "a"); err != nil { // cancel releases
		t.Fatal(err)
	}
	if err := enqueue("c"); err != nil {
		t.Fatalf("after cancel: %v", err)
	}
	l := lease(t, s, "acme", "c", 1)
	if err := enqueue("d"); !errors.As(err, &u) {
		t.Fatalf("second while running: %v", err)
	}
	if _, err := s.End(ctx, "acme", "c", l.Token, store.Outcome{Err: "boom", NoRetry: true}); err != nil { // failure releases
		t.Fatal(err)
	}
	if err := enqueue("e"); err != nil {
		t.Fatalf("after failure: %v", err)
	}
	l = lease(t, s, "acme", "e", 1)
	if _, err := s.End(ctx, "acme", "e", l.Token, store.Outcome{Result: []byte(`1`)}); err != nil { // success releases
		t.Fatal(err)
	}
	if err := enqueue("f"); err != nil {
		t.Fatalf("after success: %v", err)
	}
	// The same id again is the idempotent repeat, not a conflict.
	if err := enqueue("f"); !errors.Is(err, store.ErrExists) {
		t.Fatalf("repeat: %v", err)
	}
}

// Prune drops index entries whose tasks expired, and only those.
func TestPruneIndex(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	spec := store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond}
	for _, id := range []string{"old-gone", "old-kept"} {
		if _, err := s.Enqueue(ctx, "acme", id, spec); err != nil {
			t.Fatal(err)
		}
	}
	c.Add(48 * time.Hour)
	if _, err := s.Enqueue(ctx, "acme", "new", spec); err != nil {
		t.Fatal(err)
	}
	// Simulate the retention of old-gone ending.
	if _, err := s.Cancel(ctx, "acme", "old-gone"); err != nil {
		t.Fatal(err)
	}
	s.Redis().Del(ctx, s.Key("t", "acme", "old-gone"))
	n, err := s.Prune(ctx)
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	got, _, err := s.List(ctx, "acme", store.Filter{}, 10, "")
	if err != nil || len(got) != 2 {
		t.Fatalf("list after prune: %v %v", got, err)
	}
	left, _ := s.Redis().ZCard(ctx, s.Key("i", "acme")).Result()
	if left != 2 {
		t.Errorf("index has %d entries, want 2", left)
	}
}

// Every queue name becomes a quorum queue on the broker, so one tenant's
// distinct queues are capped; queues it already uses stay open, and other
// tenants are not affected.
func TestQueuesPerTenantAreCapped(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	spec := func(q string) store.Spec {
		return store.Spec{Name: "x", Queue: q, HardLimit: time.Second, Backoff: time.Second, BackoffMax: time.Second}
	}
	for i := range store.MaxQueues {
		if _, err := s.Enqueue(ctx, "acme", fmt.Sprintf("t%d", i), spec(fmt.Sprintf("q%d", i))); err != nil {
			t.Fatalf("queue %d: %v", i, err)
		}
	}
	if _, err := s.Enqueue(ctx, "acme", "over", spec("one-more")); !errors.Is(err, store.ErrTooManyQueues) {
		t.Fatalf("queue %d: %v, want ErrTooManyQueues", store.MaxQueues+1, err)
	}
	if _, err := s.Get(ctx, "acme", "over"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused task was stored: %v", err)
	}
	if _, err := s.Enqueue(ctx, "acme", "again", spec("q7")); err != nil {
		t.Errorf("a queue in use: %v", err)
	}
	if _, err := s.Enqueue(ctx, "other", "t1", spec("one-more")); err != nil {
		t.Errorf("another tenant: %v", err)
	}
}

// A published note is the only carrier of a pending task; if the broker
// loses it (dead-lettered after many nacks during a Redis outage), the
// schedule must publish it again rather than leave the task pending
// forever. Once the task is leased, the entry is gone.
func TestLostNoteIsPublishedAgain(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, "acme", "t1", store.Spec{Name: "x", Queue: "q", HardLimit: time.Second, Backoff: time.Second, BackoffMax: time.Second}); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Claim(ctx, 10, 30*time.Second)
	if err != nil || len(rs) != 1 {
		t.Fatalf("claim: %v %v", rs, err)
	}
	if err := s.Published(ctx, rs[0]); err != nil {
		t.Fatal(err)
	}
	c.Add(time.Minute)
	if rs, _ := s.Claim(ctx, 10, 30*time.Second); len(rs) != 0 {
		t.Fatalf("claimed again right after it was published: %v", rs)
	}
	c.Add(store.NoteTimeout) // the note never came back
	rs, err = s.Claim(ctx, 10, 30*time.Second)
	if err != nil || len(rs) != 1 || rs[0] != (store.Ready{Tenant: "acme", ID: "t1", Gen: 1}) {
		t.Fatalf("lost note not claimed again: %v %v", rs, err)
	}
	lease(t, s, "acme", "t1", 1)
	c.Add(2 * store.NoteTimeout)
	if rs, _ := s.Claim(ctx, 10, 30*time.Second); len(rs) != 0 {
		t.Fatalf("claimed after the lease: %v", rs)
	}
}

// The dead set of a queue is capped (oldest out), and a task retried later
// again and again keeps only its latest attempts in its log.
func TestDeadSetAndAttemptLogAreCapped(t *testing.T) {
	s, c := newStoreWith(t, store.Config{MaxDead: 3})
	ctx := context.Background()
	for i := range 5 {
		id := fmt.Sprintf("d%d", i)
		if _, err := s.Enqueue(ctx, "acme", id, store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute}); err != nil {
			t.Fatal(err)
		}
		l := lease(t, s, "acme", id, 1)
		if st, err := s.End(ctx, "acme", id, l.Token, store.Outcome{Err: "boom"}); err != nil || st != store.Failed {
			t.Fatalf("end %s: %s %v", id, st, err)
		}
		c.Add(time.Millisecond)
	}
	qs, err := s.Queues(ctx, "acme")
	if err != nil || len(qs) != 1 {
		t.Fatalf("queues: %v %v", qs, err)
	}
	if qs[0].Dead != 3 {
		t.Errorf("dead set holds %d, want the cap of 3", qs[0].Dead)
	}

	if _, err := s.Enqueue(ctx, "acme", "later", store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute}); err != nil {
		t.Fatal(err)
	}
	n := store.MaxAttemptLog + 20
	for gen := int64(1); gen <= int64(n); gen++ {
		l := lease(t, s, "acme", "later", gen)
		if st, err := s.End(ctx, "acme", "later", l.Token, store.Outcome{Err: "busy", RetryAfter: time.Millisecond}); err != nil || st != store.Pending {
			t.Fatalf("retry later: %s %v", st, err)
		}
		c.Add(2 * time.Millisecond)
	}
	got, err := s.Get(ctx, "acme", "later")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Log) != store.MaxAttemptLog || got.Log[len(got.Log)-1].Number != n {
		t.Errorf("log holds %d attempts ending with %d, want the latest %d ending with %d", len(got.Log), got.Log[len(got.Log)-1].Number, store.MaxAttemptLog, n)
	}
}

// Prune also drops the listing entries of chains and groups that expired.
func TestPruneCanvasIndex(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	spec := store.Spec{Name: "x", Queue: "q", HardLimit: time.Minute, Backoff: time.Millisecond, BackoffMax: time.Millisecond}
	for _, id := range []string{"gone", "kept"} {
		if _, err := s.CreateCanvas(ctx, "acme", id, store.CanvasSpec{Kind: store.Chain, Members: []store.Member{{Spec: spec}}}); err != nil {
			t.Fatal(err)
		}
	}
	c.Add(48 * time.Hour)
	s.Redis().Del(ctx, s.Key("cv", "acme", "gone")) // its retention ended
	if _, err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	ids, err := s.Redis().ZRange(ctx, s.Key("cvs", store.Chain, "acme"), 0, -1).Result()
	if err != nil || len(ids) != 1 || ids[0] != "kept" {
		t.Errorf("chain index after prune: %v %v", ids, err)
	}
}

// One unreadable task record fails only its own end: the others of the
// batch are read (a batch of up to 256 ends used to fail as a whole), and
// a hash left with no spec counts as a task that is gone.
func TestEndedTasksIsolatesABadRecord(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, "acme", "good", store.Spec{Name: "noop", Queue: "q", HardLimit: time.Minute}); err != nil {
		t.Fatal(err)
	}
	rdb := s.Redis()
	if err := rdb.Set(ctx, s.Key("t", "acme", "wrongtype"), "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, s.Key("t", "acme", "specless"), "cb", "pending").Err(); err != nil {
		t.Fatal(err)
	}
	es := []store.Ending{
		{Tenant: "acme", ID: "wrongtype", State: store.Succeeded, Attempts: 1},
		{Tenant: "acme", ID: "good", State: store.Succeeded, Attempts: 1},
		{Tenant: "acme", ID: "specless", State: store.Succeeded, Attempts: 1},
		{Tenant: "acme", ID: "gone", State: store.Succeeded, Attempts: 1},
	}
	ts, errs, err := s.EndedTasks(ctx, es)
	if err != nil {
		t.Fatalf("EndedTasks: %v", err)
	}
	if errs[0] == nil || ts[0] != nil {
		t.Errorf("wrong-type record: task %v, err %v; want its own error", ts[0], errs[0])
	}
	if errs[1] != nil || ts[1] == nil || ts[1].Spec.Name != "noop" {
		t.Errorf("good record: task %v, err %v", ts[1], errs[1])
	}
	for _, i := range []int{2, 3} {
		if errs[i] != nil || ts[i] != nil {
			t.Errorf("%s: task %v, err %v; want gone", es[i].ID, ts[i], errs[i])
		}
	}
}
