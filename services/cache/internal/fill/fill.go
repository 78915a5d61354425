// Package fill answers reads: hits from Redis, misses from the origin with
// one load per key across every replica, stale values within the
// stale-while-revalidate window while a refresh runs in the background, and
// early refresh of hot keys before they expire (XFetch).
//
// One load per key: within a process, concurrent misses share one flight
// (singleflight); across processes, the flight first takes the key's lease
// in Redis, and a flight that finds the lease taken polls Redis until the
// value appears, the lease disappears (its filler died or was fenced off by
// an invalidation; then it takes the lease itself) or its wait runs out.
//
// Invariant 8: a fill stores its value only if nothing invalidated the key
// since it took the lease (see package entries). A fill that was fenced off
// loads again, so the value it returns is never from before an
// invalidation that was acknowledged before the read began. A flight is
// forgotten (singleflight.Forget) right before the Redis operation whose
// result it returns, so a request that arrives after that operation starts
// a flight of its own instead of inheriting an older answer.
package fill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/hookyard/hookyard/services/cache/internal/entries"
	"github.com/hookyard/hookyard/services/cache/internal/metrics"
	"github.com/hookyard/hookyard/services/cache/internal/namespace"
	"github.com/hookyard/hookyard/services/cache/internal/near"
	"github.com/hookyard/hookyard/services/cache/internal/origin"
)

// ErrNotFound means the key has no value: the origin answered 404 (now or
// remembered), or, in a cache-aside namespace, nobody stored it.
type ErrNotFound struct{ Reason string }

func (e *ErrNotFound) Error() string { return e.Reason }

// ErrUnavailable means no value could be produced: the origin failed and
// there is no stale value, a wait for another fill timed out, or Redis
// failed.
type ErrUnavailable struct {
	// Reason says what failed, for the caller (the origin's answer, the
	// wait that timed out).
	Reason string
	// Why is the failure's kind, one of the Why constants.
	Why string
	// Store is Redis's error when Redis failed; its text names hosts and
	// keys, so it is for the log, not the caller.
	Store error
}

// Kinds of ErrUnavailable (ErrorInfo reasons at the API's edge).
const (
	WhyOrigin      = "ORIGIN_UNAVAILABLE"      // the origin failed or timed out
	WhyFillWait    = "FILL_WAIT_TIMEOUT"       // another replica's fill did not finish in time
	WhyInvalidated = "INVALIDATED_DURING_FILL" // invalidated again and again while filled
	WhyStore       = "UNAVAILABLE"             // Redis failed
)

func (e *ErrUnavailable) Error() string { return e.Reason }
func (e *ErrUnavailable) Unwrap() error { return e.Store }

// storeError is a Redis failure while reading.
func storeError(err error) *ErrUnavailable {
	return &ErrUnavailable{Reason: fmt.Sprintf("cache store: %v", err), Why: WhyStore, Store: err}
}

// Result is a read's answer.
type Result struct {
	Entry *entries.Entry
	// Hit is whether the value came from the cache rather than from an
	// origin load made for this read.
	Hit bool
	// Stale is whether the value is past its TTL.
	Stale bool
	// Now is Redis's clock at the read, for the entry's age.
	Now time.Time
}

// Reader answers reads.
type Reader struct {
	Entries *entries.Store
	Origin  *origin.Client
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Near is this replica's near cache; nil means none.
	Near *near.Cache
	// Pending, when set, returns a write-behind write of key not yet at
	// the origin: a fill stores it instead of the origin's older value.
	Pending func(ctx context.Context, rec *namespace.Record, key string) ([]byte, bool, error)
	// PollMin and PollMax bound the interval of polling for another
	// replica's fill.
	PollMin, PollMax time.Duration
	// MaxRefills is how often a fill fenced off by invalidations loads
	// again before the read gives up.
	MaxRefills int

	group singleflight.Group
	bgSem chan struct{}
	bg    sync.WaitGroup
	stop  chan struct{}
	once  sync.Once
}

// NewReader returns a Reader.
func NewReader(es *entries.Store, oc *origin.Client, m *metrics.Metrics, log *slog.Logger) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reader{
		Entries: es, Origin: oc, Metrics: m, Log: log,
		PollMin: 5 * time.Millisecond, PollMax: 100 * time.Millisecond, MaxRefills: 3,
		bgSem: make(chan struct{}, 64), stop: make(chan struct{}),
	}
}

// Close stops background refreshes and waits for the running ones.
func (r *Reader) Close() error {
	r.once.Do(func() { close(r.stop) })
	r.bg.Wait()
	return nil
}

// LeaseTTL is how long a fill may hold a key: the origin timeout plus a
// margin for Redis round trips. A filler that dies frees the key after it.
func LeaseTTL(rec *namespace.Record) time.Duration {
	return namespace.Timeout(rec.NS) + 2*time.Second
}

func hasOrigin(rec *namespace.Record) bool {
	return rec.NS.GetStrategy() != namespace.CacheAside && rec.NS.GetOriginUrl() != ""
}

// Get reads key of rec.
func (r *Reader) Get(ctx context.Context, rec *namespace.Record, key string) (Result, error) {
	var mark uint64
	if near.Enabled(rec.NS) && r.Near != nil {
		if e, ok := r.Near.Get(rec.ID, rec.NS, key); ok {
			if now := time.Now(); now.Before(e.Fresh) {
				r.Metrics.GetNearHit.Inc()
				return Result{Entry: e, Hit: true, Now: now}, nil
			}
		}
		mark = r.Near.Mark(rec.ID)
	}
	res, err := r.get(ctx, rec, key)
	if err == nil && !res.Stale {
		r.Near.Put(rec.ID, rec.NS, key, res.Entry, mark)
	}
	return res, err
}

func (r *Reader) get(ctx context.Context, rec *namespace.Record, key string) (Result, error) {
	n := r.Entries.NS(rec.ID)
	rd, err := r.Entries.Get(ctx, n, key)
	if err != nil {
		r.Metrics.Gets.WithLabelValues("error").Inc()
		return Result{}, storeError(err)
	}
	if e := rd.Entry; e != nil {
		stale := !rd.Fresh()
		if e.Negative {
			if !stale || !hasOrigin(rec) {
				r.Metrics.Gets.WithLabelValues("negative").Inc()
				return Result{}, &ErrNotFound{Reason: fmt.Sprintf("key %q not found at the origin (remembered)", key)}
			}
		} else {
			switch {
			case stale && hasOrigin(rec):
				r.Metrics.GetStale.Inc()
				r.refreshLater(rec, key)
			case stale:
				r.Metrics.GetStale.Inc()
			default:
				r.Metrics.GetHit.Inc()
				if hasOrigin(rec) && earlyRefresh(rd, rec.NS.GetEarlyRefreshBeta()) {
					r.Metrics.EarlyRefresh.Inc()
					r.refreshLater(rec, key)
				}
			}
			return Result{Entry: e, Hit: true, Stale: stale, Now: rd.Now}, nil
		}
	}
	if !hasOrigin(rec) {
		r.Metrics.Gets.WithLabelValues("miss").Inc()
		return Result{}, &ErrNotFound{Reason: fmt.Sprintf("key %q is not cached", key)}
	}
	r.Metrics.Gets.WithLabelValues("miss").Inc()
	return r.fillShared(ctx, rec, key)
}

// earlyRefresh is XFetch (Vattani et al.): refresh ahead of expiry with a
// probability that grows as expiry nears and with the cost of a fill.
func earlyRefresh(rd entries.Read, beta float64) bool {
	e := rd.Entry
	if beta <= 0 || e.Delta <= 0 {
		return false
	}
	gap := time.Duration(float64(e.Delta) * beta * -math.Log(1-rand.Float64()))
	return !rd.Now.Add(gap).Before(e.Fresh)
}

type flightResult struct {
	res Result
	err error
}

func (r *Reader) fillShared(ctx context.Context, rec *namespace.Record, key string) (Result, error) {
	fk := rec.ID + "\x00" + key
	ch := r.group.DoChan(fk, func() (any, error) {
		// The flight serves every request waiting on it: it must not end
		// when the first of them disconnects.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*LeaseTTL(rec)+time.Second)
		defer cancel()
		res, err := r.fill(fctx, rec, key, fk)
		return flightResult{res, err}, nil
	})
	select {
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case v := <-ch:
		fr := v.Val.(flightResult)
		return fr.res, fr.err
	}
}

// fill loads key, or waits for the replica that does.
func (r *Reader) fill(ctx context.Context, rec *namespace.Record, key, fk string) (Result, error) {
	n := r.Entries.NS(rec.ID)
	leaseTTL := LeaseTTL(rec)
	deadline := time.Now().Add(2 * leaseTTL)
	poll := r.PollMin
	waited := false
	refills := 0
	for {
		if time.Now().After(deadline) {
			r.Metrics.FillWaits.WithLabelValues("timeout").Inc()
			return Result{}, &ErrUnavailable{Why: WhyFillWait, Reason: fmt.Sprintf("timed out after %s waiting for another fill of key %q", (2 * leaseTTL).Round(time.Millisecond), key)}
		}
		lease, err := r.Entries.Acquire(ctx, n, key, leaseTTL, false)
		switch {
		case errors.Is(err, entries.ErrFilled):
			if res, done, err := r.reread(ctx, rec, key, fk); done {
				if waited {
					r.Metrics.FillWaits.WithLabelValues("filled").Inc()
				}
				return res, err
			}
			continue
		case errors.Is(err, entries.ErrLeased):
			waited = true
			select {
			case <-ctx.Done():
				return Result{}, &ErrUnavailable{Why: WhyFillWait, Reason: fmt.Sprintf("waiting for another fill of key %q: %v", key, ctx.Err())}
			case <-time.After(poll):
			}
			poll = min(poll*2, r.PollMax)
			rd, err := r.Entries.Get(ctx, n, key)
			if err != nil {
				return Result{}, storeError(err)
			}
			if rd.Entry != nil && (rd.Fresh() || rd.Entry.Negative) {
				if res, done, err := r.reread(ctx, rec, key, fk); done {
					r.Metrics.FillWaits.WithLabelValues("filled").Inc()
					return res, err
				}
			}
			if !rd.Leased {
				r.Metrics.FillWaits.WithLabelValues("took_over").Inc()
			}
			continue
		case err != nil:
			return Result{}, storeError(err)
		}

		res, err := r.load(ctx, rec, key, lease, fk)
		if errors.Is(err, errFenced) {
			refills++
			if refills > r.MaxRefills {
				return Result{}, &ErrUnavailable{Why: WhyInvalidated, Reason: fmt.Sprintf("key %q was invalidated %d times while it was filled; not serving a value that may be outdated", key, refills)}
			}
			continue
		}
		return res, err
	}
}

var errFenced = errors.New("fenced")

// reread returns the value another fill stored. It forgets the flight
// first, so only requests that joined before this read share its answer.
func (r *Reader) reread(ctx context.Context, rec *namespace.Record, key, fk string) (Result, bool, error) {
	r.group.Forget(fk)
	rd, err := r.Entries.Get(ctx, r.Entries.NS(rec.ID), key)
	if err != nil {
		return Result{}, true, storeError(err)
	}
	if rd.Entry == nil {
		return Result{}, false, nil
	}
	if rd.Entry.Negative {
		return Result{}, true, &ErrNotFound{Reason: fmt.Sprintf("key %q not found at the origin", key)}
	}
	return Result{Entry: rd.Entry, Hit: true, Stale: !rd.Fresh(), Now: rd.Now}, true, nil
}

// TTLFor draws a value's TTL: ttl plus or minus up to jitter.
func TTLFor(rec *namespace.Record) time.Duration {
	ttl := namespace.TTL(rec.NS)
	if j := rec.NS.GetTtlJitter().AsDuration(); j > 0 {
		ttl += time.Duration(rand.Int64N(int64(2*j))) - j
	}
	return max(ttl, time.Millisecond)
}

// load calls the origin under lease and commits what it answers.
func (r *Reader) load(ctx context.Context, rec *namespace.Record, key string, lease *entries.Lease, fk string) (Result, error) {
	n := r.Entries.NS(rec.ID)
	start := time.Now()
	got, err := r.loadOrigin(ctx, rec, key)
	took := time.Since(start)
	r.Metrics.OriginLatency.WithLabelValues("load").Observe(took.Seconds())
	var v entries.Value
	switch {
	case errors.Is(err, origin.ErrNotFound):
		r.Metrics.Origin.WithLabelValues("load", "not_found").Inc()
		neg := namespace.NegativeTTL(rec.NS)
		if neg <= 0 {
			_ = r.Entries.Release(context.WithoutCancel(ctx), n, lease)
			r.Metrics.Fills.WithLabelValues("not_found").Inc()
			return Result{}, &ErrNotFound{Reason: fmt.Sprintf("key %q not found at the origin", key)}
		}
		v = entries.Value{Negative: true, TTL: neg, Keep: neg, Delta: took}
	case err != nil:
		r.Metrics.Origin.WithLabelValues("load", "error").Inc()
		r.Metrics.Fills.WithLabelValues("origin_error").Inc()
		_ = r.Entries.Release(context.WithoutCancel(ctx), n, lease)
		return Result{}, &ErrUnavailable{Why: WhyOrigin, Reason: err.Error()}
	default:
		r.Metrics.Origin.WithLabelValues("load", "ok").Inc()
		ttl := TTLFor(rec)
		v = entries.Value{Bytes: got.Value, TTL: ttl, Keep: ttl + rec.NS.GetStaleWhileRevalidate().AsDuration(), Delta: took, Tags: got.Tags}
	}
	if fk != "" {
		r.group.Forget(fk)
	}
	err = r.Entries.Commit(context.WithoutCancel(ctx), n, lease, v)
	switch {
	case errors.Is(err, entries.ErrLeaseLost), errors.Is(err, entries.ErrEpochMoved),
		errors.Is(err, entries.ErrFenced), errors.Is(err, entries.ErrFencesAhead):
		r.Metrics.Fills.WithLabelValues("invalidated").Inc()
		r.Log.DebugContext(ctx, "fill discarded: invalidated while loading", "key", key, "reason", err)
		return Result{}, errFenced
	case err != nil:
		return Result{}, storeError(err)
	}
	if v.Negative {
		r.Metrics.Fills.WithLabelValues("not_found").Inc()
		return Result{}, &ErrNotFound{Reason: fmt.Sprintf("key %q not found at the origin", key)}
	}
	r.Metrics.Fills.WithLabelValues("stored").Inc()
	now := time.Now()
	return Result{Entry: &entries.Entry{Value: v.Bytes, Stored: now, Fresh: now.Add(v.TTL), Delta: took, Tags: v.Tags}, Now: now}, nil
}

// loadOrigin loads key from the origin, or from its pending write-behind
// write, which is newer than anything the origin has.
func (r *Reader) loadOrigin(ctx context.Context, rec *namespace.Record, key string) (origin.Result, error) {
	if r.Pending != nil && rec.NS.GetStrategy() == namespace.WriteBehind {
		v, ok, err := r.Pending(ctx, rec, key)
		if err != nil {
			return origin.Result{}, &origin.Error{Reason: fmt.Sprintf("reading the pending write: %v", err)}
		}
		if ok {
			return origin.Result{Value: v}, nil
		}
	}
	return r.Origin.Load(ctx, rec.NS, key)
}

// refreshLater refreshes key in the background, unless a refresh or fill
// of it is already running anywhere, or too many refreshes run here.
func (r *Reader) refreshLater(rec *namespace.Record, key string) {
	select {
	case <-r.stop:
		return
	case r.bgSem <- struct{}{}:
	default:
		return
	}
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		defer func() { <-r.bgSem }()
		_, _, _ = r.group.Do("refresh\x00"+rec.ID+"\x00"+key, func() (any, error) {
			ctx, cancel := context.WithTimeout(context.Background(), LeaseTTL(rec))
			defer cancel()
			go func() {
				select {
				case <-r.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			lease, err := r.Entries.Acquire(ctx, r.Entries.NS(rec.ID), key, LeaseTTL(rec), true)
			if err != nil {
				return nil, nil // someone else is on it
			}
			if _, err := r.load(ctx, rec, key, lease, ""); err != nil {
				r.Log.DebugContext(ctx, "background refresh failed", "key", key, "err", err)
			}
			return nil, nil
		})
	}()
}
