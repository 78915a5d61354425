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
	if err := s.ClearFailing(ctx, "acme", ep.GetId()); err != nil {
		t.Fatal(err)
	}
	if rec, _ := s.Get(ctx, "acme", ep.GetId()); rec.Endpoint.GetFailingSince() != nil {
		t.Fatalf("failing_since %v after ClearFailing", rec.Endpoint.GetFailingSince())
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
