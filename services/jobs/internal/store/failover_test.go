package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hookyard/hookyard/services/jobs/internal/store"
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
