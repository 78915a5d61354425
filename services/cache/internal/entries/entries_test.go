package entries

import (
	"context"
	"testing"
	"time"

	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

func newStore(t *testing.T) (*Store, NS) {
	prefix := "hookyard:test:cache:" + testenv.ID()
	s := New(testenv.Redis(t, prefix), prefix)
	return s, s.NS("ns1")
}

// members counts a tag's members, whichever Redis type holds them.
func members(t *testing.T, s *Store, n NS, tag string) int64 {
	ctx := context.Background()
	typ, err := s.rdb.Type(ctx, n.tag(tag)).Result()
	if err != nil {
		t.Fatal(err)
	}
	switch typ {
	case "set":
		return s.rdb.SCard(ctx, n.tag(tag)).Val()
	case "zset":
		return s.rdb.ZCard(ctx, n.tag(tag)).Val()
	}
	return 0
}

// A tag that keeps getting new keys never expires as a whole; the keys
// that expired in the meantime must not pile up in it.
func TestTagSetsDropExpiredKeys(t *testing.T) {
	s, n := newStore(t)
	ctx := context.Background()
	long := Value{Bytes: []byte("y"), TTL: time.Minute, Keep: time.Minute, Tags: []string{"hot"}}
	if err := s.Set(ctx, n, "z", long); err != nil {
		t.Fatal(err)
	}
	short := Value{Bytes: []byte("x"), TTL: 50 * time.Millisecond, Keep: 50 * time.Millisecond, Tags: []string{"hot"}}
	for _, k := range []string{"a", "b", "c"} {
		if err := s.Set(ctx, n, k, short); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 20*time.Second, "the short values to expire", func() bool {
		for _, k := range []string{"a", "b", "c"} {
			if r, err := s.Get(ctx, n, k); err != nil || r.Entry != nil {
				return false
			}
		}
		return true
	})
	if err := s.Set(ctx, n, "d", long); err != nil {
		t.Fatal(err)
	}
	if got := members(t, s, n, "hot"); got != 2 {
		t.Fatalf("tag holds %d keys, want 2 (expired keys are kept)", got)
	}
	// Invalidating the tag still finds the live key.
	if c, err := s.InvalidateTag(ctx, n, "hot"); err != nil || c != 2 {
		t.Fatalf("invalidate tag: %d %v", c, err)
	}
	if r, _ := s.Get(ctx, n, "d"); r.Entry != nil {
		t.Fatal("the tagged key survived its tag's invalidation")
	}
}
