// Package near keeps an in-process copy of hot values of the namespaces
// that ask for one, in front of Redis, and drops copies when any replica
// invalidates or writes them.
//
// Every invalidation and write is announced on one Redis pub/sub channel
// (package entries publishes after the change is made); every replica
// subscribes and drops the copies a notice names. A copy is only stored if
// no notice for its namespace arrived since the Redis read it came from, so
// a read racing an invalidation cannot plant the old value after the
// notice. When the subscription drops, every copy is dropped (notices may
// have been missed), and copies expire after the namespace's near TTL in
// any case.
package near

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/internal/entries"
)

// DefaultTTL is a copy's life when the namespace sets none.
const DefaultTTL = 5 * time.Second

// DefaultMaxBytes bounds a namespace's copies when it sets no max_bytes.
const DefaultMaxBytes = 16 << 20

// overhead approximates a copy's memory beyond its key, value and tags
// (the entry, the list element, the map slot).
const overhead = 160

// Cache is one replica's near cache of every namespace.
type Cache struct {
	rdb     redis.UniversalClient
	channel string
	log     *slog.Logger

	mu  sync.Mutex
	nss map[string]*nsCache
	// seq numbers notices (and flushes) in arrival order; a namespace's
	// gen is the seq of its latest. orphan is the seq of the latest notice
	// for a namespace that had no cache here yet: it is the mark of such a
	// namespace, so a read that raced that notice is not stored either.
	seq, orphan uint64
	// ready is false until the subscription is confirmed, and again while
	// it is down: then nothing is stored.
	ready bool
}

// nsCache is a plain LRU whose entries carry their expiry: the library's
// expirable LRU starts a sweeper goroutine that never ends, so remaking a
// namespace's cache on every settings change leaked one.
type nsCache struct {
	lru  *lru.Cache[string, copyOf]
	size int
	ttl  time.Duration
	gen  uint64
	// bytes is what the copies hold; maxBytes bounds it.
	bytes, maxBytes int64
}

type copyOf struct {
	e    *entries.Entry
	exp  time.Time
	size int64
}

func sizeOf(key string, e *entries.Entry) int64 {
	n := int64(len(key)+len(e.Value)) + overhead
	for _, t := range e.Tags {
		n += int64(len(t)) + 16
	}
	return n
}

// New returns a near cache listening on channel.
func New(rdb redis.UniversalClient, channel string, log *slog.Logger) *Cache {
	return &Cache{rdb: rdb, channel: channel, log: log, nss: map[string]*nsCache{}}
}

// Enabled reports whether ns wants a near cache.
func Enabled(ns *cachev1.Namespace) bool { return ns.GetNearCache().GetMaxEntries() > 0 }

func settings(ns *cachev1.Namespace) (int, int64, time.Duration) {
	ttl := ns.GetNearCache().GetTtl().AsDuration()
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	b := ns.GetNearCache().GetMaxBytes()
	if b <= 0 {
		b = DefaultMaxBytes
	}
	return int(ns.GetNearCache().GetMaxEntries()), b, ttl
}

// ns returns the cache of namespace id, (re)made to ns's settings.
func (c *Cache) ns(id string, ns *cachev1.Namespace) *nsCache {
	size, maxBytes, ttl := settings(ns)
	n := c.nss[id]
	if n == nil || n.size != size || n.ttl != ttl || n.maxBytes != maxBytes {
		gen := c.orphan
		if n != nil {
			// New settings: marks taken before no longer fit.
			c.seq++
			gen = c.seq
			n.lru.Purge()
		}
		nc := &nsCache{size: size, ttl: ttl, gen: gen, maxBytes: maxBytes}
		// Called (under c.mu) for every copy that leaves, however it
		// leaves: removed, purged or evicted.
		nc.lru, _ = lru.NewWithEvict(size, func(_ string, v copyOf) { nc.bytes -= v.size })
		n = nc
		c.nss[id] = n
	}
	return n
}

// Get returns the copy of key, if any.
func (c *Cache) Get(id string, ns *cachev1.Namespace, key string) (*entries.Entry, bool) {
	if c == nil || !Enabled(ns) {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nss[id]
	if n == nil {
		return nil, false
	}
	v, ok := n.lru.Get(key)
	if !ok {
		return nil, false
	}
	if !time.Now().Before(v.exp) {
		n.lru.Remove(key)
		return nil, false
	}
	return v.e, true
}

// Mark returns the namespace's notice generation, to be passed to Put with
// a value read from Redis after it.
func (c *Cache) Mark(id string) uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nss[id]; n != nil {
		return n.gen
	}
	return c.orphan
}

// Put stores a copy of e, unless a notice for the namespace arrived since
// mark was taken.
func (c *Cache) Put(id string, ns *cachev1.Namespace, key string, e *entries.Entry, mark uint64) {
	if c == nil || !Enabled(ns) || e == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ready {
		return
	}
	if n := c.nss[id]; n == nil && mark != c.orphan {
		return
	}
	n := c.ns(id, ns)
	if n.gen != mark {
		return
	}
	// The key's older copy goes either way: e is newer.
	n.lru.Remove(key)
	size := sizeOf(key, e)
	if size > n.maxBytes {
		return
	}
	n.lru.Add(key, copyOf{e: e, exp: time.Now().Add(n.ttl), size: size})
	n.bytes += size
	for n.bytes > n.maxBytes {
		if _, _, ok := n.lru.RemoveOldest(); !ok {
			break
		}
	}
}

// Run listens for notices until ctx ends.
func (c *Cache) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		c.listen(ctx)
		c.flush(false)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (c *Cache) listen(ctx context.Context) {
	ps := c.rdb.Subscribe(ctx, c.channel)
	defer ps.Close()
	// Receive does not watch ctx; closing the subscription ends it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("near cache: lost its invalidation subscription; dropping every copy", "err", err)
			}
			return
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			// (Re)subscribed: notices before this are unknown.
			c.flush(true)
		case *redis.Message:
			c.apply(m.Payload)
		}
	}
}

func (c *Cache) flush(ready bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	for _, n := range c.nss {
		n.lru.Purge()
		n.gen = c.seq
	}
	c.orphan = c.seq
	c.ready = ready
}

// apply drops what a notice (entries.Notice) names.
func (c *Cache) apply(payload string) {
	id, rest, ok := strings.Cut(payload, "\x00")
	if !ok || rest == "" {
		return
	}
	kind, value := rest[0], rest[1:]
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	n := c.nss[id]
	if n == nil {
		c.orphan = c.seq
		return
	}
	n.gen = c.seq
	switch kind {
	case 'k':
		n.lru.Remove(value)
	case 'p':
		for _, k := range n.lru.Keys() {
			if strings.HasPrefix(k, value) {
				n.lru.Remove(k)
			}
		}
	case 't':
		for _, k := range n.lru.Keys() {
			if v, ok := n.lru.Peek(k); ok {
				for _, t := range v.e.Tags {
					if t == value {
						n.lru.Remove(k)
						break
					}
				}
			}
		}
	default:
		n.lru.Purge()
	}
}

// Drop removes the copy of key of namespace id, as a notice for it would:
// for a writer that should read its own write before the notice comes.
func (c *Cache) Drop(id, key string) {
	if c == nil {
		return
	}
	c.apply(entries.Notice(id, 'k', key))
}

// Ready reports whether the notice subscription is up (copies are stored
// only then).
func (c *Cache) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}
