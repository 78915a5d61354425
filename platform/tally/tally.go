// Package tally keeps per-tenant counters that the APIs report (webhooks
// received per source, cache hits per namespace) in Redis without a Redis
// round trip on the request path: counts add up in memory and each
// replica writes them in one pipeline every FlushEvery, with HINCRBY, so
// replicas add to the same totals.
//
// Layout: one hash per tenant and kind, <key>, with a field per
// "<name>:<counter>" (name is a source or namespace; counter names have no
// ':'). The hash expires after TTL without writes.
package tally

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// FlushEvery is how often Run writes the counts.
const FlushEvery = time.Second

// TTL is how long a tenant's counters live without a write.
const TTL = 30 * 24 * time.Hour

// slot is a hash field; the field name "<name>:<counter>" is joined
// only when written, not on every Add.
type slot struct{ key, name, counter string }

// Tally collects counts for Redis hashes.
type Tally struct {
	rdb redis.UniversalClient
	mu  sync.Mutex
	n   map[slot]int64
}

// New returns an empty Tally writing to rdb.
func New(rdb redis.UniversalClient) *Tally {
	return &Tally{rdb: rdb, n: map[slot]int64{}}
}

// Add counts n more of counter for name in the hash key.
func (t *Tally) Add(key, name, counter string, n int64) {
	s := slot{key, name, counter}
	t.mu.Lock()
	t.n[s] += n
	t.mu.Unlock()
}

// Flush writes the counts collected so far. Counts that could not be
// written are kept for the next flush.
func (t *Tally) Flush(ctx context.Context) error {
	t.mu.Lock()
	batch := t.n
	t.n = make(map[slot]int64, len(batch))
	t.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	pipe := t.rdb.Pipeline()
	keys := map[string]bool{}
	for s, n := range batch {
		pipe.HIncrBy(ctx, s.key, s.name+":"+s.counter, n)
		keys[s.key] = true
	}
	for k := range keys {
		pipe.Expire(ctx, k, TTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		// A pipeline that failed part way may have added some counts; a
		// count is more often lost than doubled by putting them all back,
		// and these are operator figures, not billing.
		t.mu.Lock()
		for s, n := range batch {
			t.n[s] += n
		}
		t.mu.Unlock()
		return fmt.Errorf("write counters: %w", err)
	}
	return nil
}

// Run flushes every FlushEvery until ctx ends, then once more (bounded by
// a few seconds) so that a replica shutting down keeps its last counts.
// Errors are passed to onErr, if set.
func (t *Tally) Run(ctx context.Context, onErr func(error)) {
	tick := time.NewTicker(FlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			defer cancel()
			if err := t.Flush(fctx); err != nil && onErr != nil {
				onErr(err)
			}
			return
		case <-tick.C:
			if err := t.Flush(ctx); err != nil && onErr != nil && ctx.Err() == nil {
				onErr(err)
			}
		}
	}
}

// Read returns the counters of the hash key by name, then counter.
func Read(ctx context.Context, rdb redis.UniversalClient, key string) (map[string]map[string]int64, error) {
	vals, err := rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	out := map[string]map[string]int64{}
	for f, v := range vals {
		i := strings.LastIndexByte(f, ':')
		if i < 0 {
			continue
		}
		var n int64
		if _, err := fmt.Sscan(v, &n); err != nil {
			continue
		}
		name, counter := f[:i], f[i+1:]
		if out[name] == nil {
			out[name] = map[string]int64{}
		}
		out[name][counter] += n
	}
	return out, nil
}
