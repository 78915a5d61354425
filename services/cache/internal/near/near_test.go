package near

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/services/cache/internal/entries"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

var ns = &cachev1.Namespace{Name: "n", NearCache: &cachev1.NearCache{MaxEntries: 10, Ttl: durationpb.New(time.Minute)}}

func run(t *testing.T, c *Cache) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func entry(v string) *entries.Entry {
	return &entries.Entry{Value: []byte(v), Fresh: time.Now().Add(time.Hour), Tags: []string{"tag"}}
}

// putReady stores a copy once the subscription is up (before, nothing is
// stored).
func putReady(t *testing.T, c *Cache, key string) {
	testenv.WaitFor(t, 10*time.Second, "the near cache to store", func() bool {
		c.Put("id", ns, key, entry("v"), c.Mark("id"))
		_, ok := c.Get("id", ns, key)
		return ok
	})
}

func TestNoticesDropCopies(t *testing.T) {
	id := testenv.ID()
	rdb := testenv.Redis(t, "hookyard:test:cache:"+id)
	channel := "hookyard:test:cache:" + id + ":near"
	c := New(rdb, channel, slog.New(slog.DiscardHandler))
	run(t, c)
	for _, notice := range []string{
		entries.Notice("id", 'k', "a"), entries.Notice("id", 't', "tag"),
		entries.Notice("id", 'p', "a"), entries.Notice("id", 'a', ""),
	} {
		putReady(t, c, "a")
		if err := rdb.Publish(context.Background(), channel, notice).Err(); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 10*time.Second, "the notice to drop the copy", func() bool {
			_, ok := c.Get("id", ns, "a")
			return !ok
		})
	}
	// A notice between a Redis read and storing its value wins.
	mark := c.Mark("id")
	if err := rdb.Publish(context.Background(), channel, entries.Notice("id", 'k', "b")).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the notice", func() bool { return c.Mark("id") != mark })
	c.Put("id", ns, "b", entry("old"), mark)
	if _, ok := c.Get("id", ns, "b"); ok {
		t.Fatal("a value read before a notice was stored after it")
	}
}

func TestLostSubscriptionDropsCopies(t *testing.T) {
	id := testenv.ID()
	proxy := rabbittest.NewProxy(t, "127.0.0.1:6379")
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	c := New(rdb, "hookyard:test:cache:"+id+":near", slog.New(slog.DiscardHandler))
	run(t, c)
	putReady(t, c, "a")
	proxy.Cut()
	testenv.WaitFor(t, 10*time.Second, "the copies to be dropped", func() bool {
		_, ok := c.Get("id", ns, "a")
		return !ok
	})
	c.Put("id", ns, "a", entry("v"), c.Mark("id"))
	if _, ok := c.Get("id", ns, "a"); ok {
		t.Fatal("stored a copy while unsubscribed")
	}
	proxy.Restore()
	putReady(t, c, "a")
}

// A copy lives for the namespace's near TTL, and remaking the cache for new
// settings starts it empty.
func TestCopiesExpireAndSettingsStartAfresh(t *testing.T) {
	id := testenv.ID()
	rdb := testenv.Redis(t, "hookyard:test:cache:"+id)
	c := New(rdb, "hookyard:test:cache:"+id+":near", slog.New(slog.DiscardHandler))
	run(t, c)
	short := &cachev1.Namespace{Name: "n", NearCache: &cachev1.NearCache{MaxEntries: 10, Ttl: durationpb.New(time.Second)}}
	testenv.WaitFor(t, 10*time.Second, "the near cache to store", func() bool {
		c.Put("id", short, "a", entry("v"), c.Mark("id"))
		_, ok := c.Get("id", short, "a")
		return ok
	})
	testenv.WaitFor(t, 10*time.Second, "the copy to expire", func() bool {
		_, ok := c.Get("id", short, "a")
		return !ok
	})
	c.Put("id", short, "b", entry("v"), c.Mark("id"))
	if _, ok := c.Get("id", short, "b"); !ok {
		t.Fatal("copy not stored")
	}
	c.Put("id", ns, "c", entry("v"), c.Mark("id")) // other settings: a new cache
	if _, ok := c.Get("id", ns, "b"); ok {
		t.Error("a copy survived the settings change")
	}
}

// The near cache is bounded by the bytes it holds, not only by its entry
// count: a few large values cannot take the replica's memory.
func TestCopiesAreBoundedByBytes(t *testing.T) {
	id := testenv.ID()
	rdb := testenv.Redis(t, "hookyard:test:cache:"+id)
	c := New(rdb, "hookyard:test:cache:"+id+":near", slog.New(slog.DiscardHandler))
	run(t, c)
	small := &cachev1.Namespace{Name: "n", NearCache: &cachev1.NearCache{MaxEntries: 1000, MaxBytes: 2000, Ttl: durationpb.New(time.Minute)}}
	big := func() *entries.Entry {
		return &entries.Entry{Value: make([]byte, 600), Fresh: time.Now().Add(time.Hour)}
	}
	testenv.WaitFor(t, 10*time.Second, "the near cache to store", func() bool {
		c.Put("id", small, "k0", big(), c.Mark("id"))
		_, ok := c.Get("id", small, "k0")
		return ok
	})
	for i := 1; i < 10; i++ {
		c.Put("id", small, fmt.Sprint("k", i), big(), c.Mark("id"))
	}
	held := 0
	for i := range 10 {
		if _, ok := c.Get("id", small, fmt.Sprint("k", i)); ok {
			held++
		}
	}
	if held == 0 || held*600 > 2000 {
		t.Fatalf("holds %d copies of 600 bytes under a 2000-byte bound", held)
	}
	if _, ok := c.Get("id", small, "k9"); !ok {
		t.Fatal("the most recent copy was dropped")
	}
	c.Put("id", small, "huge", &entries.Entry{Value: make([]byte, 5000), Fresh: time.Now().Add(time.Hour)}, c.Mark("id"))
	if _, ok := c.Get("id", small, "huge"); ok {
		t.Fatal("a value larger than the whole bound was copied")
	}
	if _, ok := c.Get("id", small, "k9"); !ok {
		t.Fatal("an oversized value evicted the others")
	}
}

// A notice for a namespace this replica has no copies of yet still counts:
// a value read from Redis before it must not be stored after it.
func TestNoticeForNamespaceNotYetCachedStillCounts(t *testing.T) {
	id := testenv.ID()
	rdb := testenv.Redis(t, "hookyard:test:cache:"+id)
	channel := "hookyard:test:cache:" + id + ":near"
	c := New(rdb, channel, slog.New(slog.DiscardHandler))
	run(t, c)
	putReady(t, c, "a") // namespace "id" is known; "fresh" is not
	mark := c.Mark("fresh")
	// Notices arrive in order: once the second one has been applied, so
	// has the first.
	if err := rdb.Publish(context.Background(), channel, entries.Notice("fresh", 'k', "b")).Err(); err != nil {
		t.Fatal(err)
	}
	seen := c.Mark("id")
	if err := rdb.Publish(context.Background(), channel, entries.Notice("id", 'k', "zzz")).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the notices", func() bool { return c.Mark("id") != seen })
	c.Put("fresh", ns, "b", entry("old"), mark)
	if _, ok := c.Get("fresh", ns, "b"); ok {
		t.Fatal("a value read before a notice was stored after it")
	}
}
