package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookyard/hookyard/services/jobs/internal/store"
	"github.com/redis/go-redis/v9"
)

// After a failover, Resync makes due the tasks whose note is in flight
// (published, entry pushed NoteTimeout ahead) and no other: not a task
// with an ETA ahead; and it does so once per key across replicas.
func TestResyncMakesNotesInFlightDue(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, "acme", "inflight", store.Spec{Name: "x", Queue: "q"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(ctx, "acme", "later", store.Spec{Name: "x", Queue: "q", ETA: clk.Now().Add(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Claim(ctx, 10, 30*time.Second)
	if err != nil || len(rs) != 1 || rs[0].ID != "inflight" {
		t.Fatalf("claim: %v %v", rs, err)
	}
	if err := s.Published(ctx, rs[0]); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	if rs, _ := s.Claim(ctx, 10, 30*time.Second); len(rs) != 0 {
		t.Fatalf("due before the resync: %v", rs)
	}
	n, err := s.Resync(ctx, "replid:1")
	if err != nil || n != 1 {
		t.Fatalf("resync: %d %v, want 1", n, err)
	}
	rs, err = s.Claim(ctx, 10, 30*time.Second)
	if err != nil || len(rs) != 1 || rs[0].ID != "inflight" {
		t.Fatalf("claim after the resync: %v %v, want the task in flight only", rs, err)
	}
	if err := s.Published(ctx, rs[0]); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Resync(ctx, "replid:1"); err != nil || n != 0 {
		t.Fatalf("second resync with the same key: %d %v, want 0", n, err)
	}
}

// A holder's token above the stored one means its lease was lost, but
// only for a task that was due: a task enqueued later under the id of an
// expired one, with an ETA ahead, is not started early by a stale
// holder's heartbeat.
func TestLostLeaseKeepsAnETAAhead(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	eta := clk.Now().Add(10 * time.Minute)
	if _, err := s.Enqueue(ctx, "acme", "later", store.Spec{Name: "x", Queue: "q", ETA: eta}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Heartbeat(ctx, "acme", "later", clk.Now().UnixMilli(), time.Second); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("heartbeat: %v, want ErrLeaseLost", err)
	}
	if _, err := s.End(ctx, "acme", "later", clk.Now().UnixMilli(), store.Outcome{}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("end: %v, want ErrLeaseLost", err)
	}
	clk.Add(time.Minute)
	if rs, _ := s.Claim(ctx, 10, 30*time.Second); len(rs) != 0 {
		t.Fatalf("a stale holder made a task due before its ETA: %v", rs)
	}
}

// afterExpiry runs fn once, just before the first command sent after the
// reaper's end script (token "*"): in the gap between the expiry and
// anything the store sends after it.
type afterExpiry struct {
	fn     func()
	once   sync.Once
	expiry atomic.Bool
}

func (h *afterExpiry) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterExpiry) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *afterExpiry) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.fn != nil && h.expiry.CompareAndSwap(true, false) {
			h.once.Do(h.fn) // fn's own commands find expiry false
		}
		a := cmd.Args()
		if (cmd.Name() == "evalsha" || cmd.Name() == "eval") && len(a) > 9 && fmt.Sprint(a[2]) == "6" && fmt.Sprint(a[9]) == "*" {
			err := next(ctx, cmd)
			h.expiry.Store(err == nil)
			return err
		}
		return next(ctx, cmd)
	}
}

// The reaper finds an expired lease entry whose attempt another replica
// has just ended (the task is pending for its retry), and the task is
// leased again right after the reaper's expiry found it not running: the
// new lease's entry must stay (the stale one used to be dropped by a
// separate ZREM, which could take the new one), or the task is running
// with nothing that ends it should its holder die.
func TestExpireKeepsTheLeaseEntryOfANewerLease(t *testing.T) {
	h := &afterExpiry{}
	s, clk := newStoreHooked(t, store.Config{}, h)
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, "acme", "t1", store.Spec{Name: "x", Queue: "q", MaxRetries: 3, HardLimit: time.Hour}); err != nil {
		t.Fatal(err)
	}
	l, ok, err := s.Lease(ctx, store.Ready{Tenant: "acme", ID: "t1", Gen: 1}, "w1", time.Second)
	if err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	clk.Add(2 * time.Second)
	if due, err := s.Expired(ctx, 10); err != nil || len(due) != 1 {
		t.Fatalf("expired: %v %v", due, err)
	}
	// The holder ends the attempt first; a retry is pending at generation 2.
	if st, err := s.End(ctx, "acme", "t1", l.Token, store.Outcome{Err: "boom"}); err != nil || st != store.Pending {
		t.Fatalf("end: %s %v", st, err)
	}
	var again *store.Lease
	h.fn = func() {
		clk.Add(time.Minute) // past the retry's backoff
		again, ok, err = s.Lease(ctx, store.Ready{Tenant: "acme", ID: "t1", Gen: 2}, "w2", time.Hour)
		if err != nil || !ok {
			t.Errorf("lease again: %v %v", ok, err)
		}
	}
	if _, changed, err := s.Expire(ctx, "acme", "t1"); err != nil || changed {
		t.Fatalf("expire: %v %v", changed, err)
	}
	h.expiry.Store(false)
	h.once.Do(h.fn) // if the expiry sent nothing after its script
	if again == nil {
		t.Fatal("no second lease")
	}
	if due, err := s.Expired(ctx, 10); err != nil || len(due) != 0 {
		t.Fatalf("expired after: %v %v", due, err)
	}
	clk.Add(2 * time.Hour)
	if due, err := s.Expired(ctx, 10); err != nil || len(due) != 1 {
		t.Fatalf("the running attempt of w2 has no lease entry: expired %v %v, want it once its lease ends", due, err)
	}
}
