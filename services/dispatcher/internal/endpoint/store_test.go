package endpoint

import (
	"context"
	"errors"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

func TestFailureRun(t *testing.T) {
	t.Parallel()
	prefix := testenv.KeyPrefix(testenv.ID())
	rdb := testenv.Redis(t, prefix)
	s := New(rdb, prefix)
	ctx := context.Background()
	ep, err := s.Create(ctx, "acme", &dispatcherv1.Endpoint{Url: "https://example.com/hook"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for _, at := range []time.Time{start, time.Now()} {
		since, err := s.MarkFailing(ctx, "acme", ep.GetId(), at)
		if err != nil || !since.Equal(start) {
			t.Fatalf("MarkFailing(%v) = %v, %v; want the start of the run %v", at, since, err, start)
		}
	}
	rec, err := s.Get(ctx, "acme", ep.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.Endpoint.GetFailingSince(); !got.AsTime().Equal(start) {
		t.Fatalf("failing_since %v, want %v", got, start)
	}
	pipe := rdb.Pipeline()
	s.QueueClearFailing(ctx, pipe, "acme", ep.GetId())
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, _ := s.Get(ctx, "acme", ep.GetId()); rec.Endpoint.GetFailingSince() != nil {
		t.Fatalf("failing_since %v after QueueClearFailing", rec.Endpoint.GetFailingSince())
	}

	// An attempt that fails after the endpoint was deleted leaves nothing.
	if err := s.Delete(ctx, "acme", ep.GetId()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkFailing(ctx, "acme", ep.GetId(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "acme", ep.GetId()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a deleted endpoint after a failed attempt: %v, want ErrNotFound", err)
	}
	if n := rdb.Exists(ctx, s.key("acme", ep.GetId())).Val(); n != 0 {
		t.Fatal("a deleted endpoint's key was written again")
	}
}

// The disabled event is owed from the moment of disabling until it is
// published, and no longer once the endpoint is enabled again.
func TestDisableNotice(t *testing.T) {
	t.Parallel()
	prefix := testenv.KeyPrefix(testenv.ID())
	rdb := testenv.Redis(t, prefix)
	s := New(rdb, prefix)
	ctx := context.Background()
	ep, err := s.Create(ctx, "acme", &dispatcherv1.Endpoint{Url: "https://example.com/hook"})
	if err != nil {
		t.Fatal(err)
	}
	id := ep.GetId()
	notice := func() string {
		t.Helper()
		rec, err := s.Get(ctx, "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		return rec.Notice
	}
	rec, changed, err := s.Disable(ctx, "acme", id, ReasonGone)
	if err != nil || !changed || rec.Notice != ReasonGone || notice() != ReasonGone {
		t.Fatalf("Disable: changed %v, notice %q (stored %q), %v", changed, rec.Notice, notice(), err)
	}
	// Disabling again changes nothing and still owes the one event.
	if rec, changed, err := s.Disable(ctx, "acme", id, ReasonFailing); err != nil || changed || rec.Notice != ReasonGone {
		t.Fatalf("second Disable: changed %v, notice %q, %v", changed, rec.Notice, err)
	}
	// Clearing another reason's notice leaves this one.
	if err := s.ClearNotice(ctx, "acme", id, ReasonFailing); err != nil || notice() != ReasonGone {
		t.Fatalf("ClearNotice(other reason): notice %q, %v", notice(), err)
	}
	if err := s.ClearNotice(ctx, "acme", id, ReasonGone); err != nil || notice() != "" {
		t.Fatalf("ClearNotice: notice %q, %v", notice(), err)
	}
	// Re-enabled before the event went out: nothing is owed any more.
	if _, _, err := s.Disable(ctx, "acme", id, ReasonManual); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Modify(ctx, "acme", id, func(r *Record) error { r.Endpoint.Disabled = false; return nil }); err != nil {
		t.Fatal(err)
	}
	if n := notice(); n != "" {
		t.Fatalf("notice %q after re-enabling", n)
	}
}
