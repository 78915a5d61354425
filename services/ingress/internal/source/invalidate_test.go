package source

import (
	"context"
	"errors"
	"testing"
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/platform/testwait"
	"github.com/redis/go-redis/v9"
)

func testRedis(t *testing.T) (redis.UniversalClient, string) {
	t.Helper()
	return redistest.New(t, "source")
}

// replica is a Store as another ingress replica holds it: its own cache,
// following changes through Run.
func replica(t *testing.T, rdb redis.UniversalClient, prefix string) *Store {
	t.Helper()
	s := New(rdb, prefix)
	s.CacheTTL = time.Hour // only invalidation may end a cached entry here
	s.VersionInterval = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Eventually(t, 20*time.Second, what, cond)
}

var stripeSource = &ingressv1.Source{Name: "inv", Provider: "stripe", Secrets: []string{"whsec_abcdefghijklmnop1234"}}

// A source deleted or changed through one replica stops being served by the
// others' caches as soon as they hear of it, not when the entry expires.
func TestChangesReachOtherReplicas(t *testing.T) {
	rdb, prefix := testRedis(t)
	a, b := replica(t, rdb, prefix), replica(t, rdb, prefix)
	ctx := context.Background()
	eventually(t, "replicas following changes", func() bool { return a.Live() && b.Live() })

	// B caches "not found", then A creates the source.
	if _, err := b.Lookup(ctx, "inv"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before create: %v", err)
	}
	if _, err := a.Create(ctx, "acme", stripeSource); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B sees the created source", func() bool { _, err := b.Lookup(ctx, "inv"); return err == nil })

	// A rotates the secret.
	if _, err := a.Modify(ctx, "acme", "inv", func(cur *ingressv1.Source) (*ingressv1.Source, error) {
		cur.Secrets = []string{"whsec_rotated_secret_000001"}
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B sees the rotated secret", func() bool {
		rec, err := b.Lookup(ctx, "inv")
		return err == nil && rec.Source.GetSecrets()[0] == "whsec_rotated_secret_000001"
	})

	// A deletes it: B refuses it.
	if err := a.Delete(ctx, "acme", "inv"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B forgets the deleted source", func() bool { _, err := b.Lookup(ctx, "inv"); return errors.Is(err, ErrNotFound) })
	// The replica that deleted it forgets it at once.
	if _, err := a.Lookup(ctx, "inv"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("A still serves the source it deleted: %v", err)
	}
}

// A change whose message was lost (a replica reconnecting, a network
// blip) is still noticed: the replicas compare a version that every change
// increments.
func TestMissedInvalidationIsCaughtByTheVersion(t *testing.T) {
	rdb, prefix := testRedis(t)
	b := replica(t, rdb, prefix)
	ctx := context.Background()
	eventually(t, "replica following changes", func() bool { return b.Live() })
	writer := New(rdb, prefix)
	if _, err := writer.Create(ctx, "acme", stripeSource); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B sees the source", func() bool { _, err := b.Lookup(ctx, "inv"); return err == nil })

	// Delete behind the replicas' backs: the key and the version change,
	// no message is sent.
	if err := rdb.Del(ctx, writer.key("inv")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Incr(ctx, writer.versionKey()).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B notices the version", func() bool { _, err := b.Lookup(ctx, "inv"); return errors.Is(err, ErrNotFound) })
}

// A load that raced an invalidation does not put the older value back in
// the cache.
func TestLoadRacingInvalidationIsNotCached(t *testing.T) {
	rdb, prefix := testRedis(t)
	s := New(rdb, prefix)
	s.CacheTTL = time.Hour
	ctx := context.Background()
	if _, err := s.Create(ctx, "acme", stripeSource); err != nil {
		t.Fatal(err)
	}
	// The invalidation lands while the load is under way.
	s.beforeCache = func() { s.invalidate("inv") }
	if _, err := s.Lookup(ctx, "inv"); err != nil {
		t.Fatal(err)
	}
	s.beforeCache = nil
	if err := rdb.Del(ctx, s.key("inv")).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "inv"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a load that raced an invalidation was cached: %v", err)
	}
}
