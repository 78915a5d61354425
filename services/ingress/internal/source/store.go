// Package source keeps the webhook sources in Redis. Source names are
// global, because the receiver URL /webhooks/{name} carries no tenant, but
// every management read is scoped to the owning tenant: another tenant's
// source is simply not found.
package source

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/services/ingress/internal/verify"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Errors of the store.
var (
	ErrNotFound = errors.New("source not found")
	ErrExists   = errors.New("source name is taken")
)

// ErrConflict means a source kept changing while an update was applied.
var ErrConflict = errors.New("the source is being changed by other requests; retry")

// Store is the Redis-backed source registry with a local cache for the
// receiver's hot path.
//
// Every change (create, update, delete) increments a version in Redis and
// publishes the source's name; Run, on every replica, drops the named entry
// as the message arrives, and drops the whole cache when the version moved
// without a message (one lost while resubscribing, say) or on resubscribe.
// A deleted source is so refused by every replica within a message's
// latency, and within VersionInterval if the message was lost.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// CacheTTL bounds how stale a cached source may be while Run is not
	// following changes (not started, or Redis unreachable). LiveCacheTTL
	// bounds it while Run is: invalidation ends entries sooner.
	CacheTTL     time.Duration
	LiveCacheTTL time.Duration
	// VersionInterval is how often Run compares the change version.
	VersionInterval time.Duration
	now             func() time.Time

	mu    sync.Mutex
	cache *lru.Cache[string, cached]
	// gen counts local invalidations: a load that started before one
	// does not cache what it read.
	gen   uint64
	live  atomic.Bool
	group singleflight.Group

	beforeCache func() // test hook: runs between a load and caching it
}

type cached struct {
	rec *Record
	at  time.Time
}

// cacheSize bounds the cache; the least recently used source is dropped
// first, so a flood of unknown names cannot evict the busy ones all at once.
const cacheSize = 100_000

// Record is a stored source with its owner.
type Record struct {
	Tenant string
	Source *ingressv1.Source
	// Verifier is the source's compiled verifier, built once as Lookup
	// loads the source (nil elsewhere, or if the stored source no longer
	// compiles, which VerifyErr then says).
	Verifier  *verify.Verifier
	VerifyErr error
	// StatsKey is Store.StatsKey(Tenant), set by Lookup so the receiver
	// does not build it on every webhook.
	StatsKey string
}

type stored struct {
	Tenant string          `json:"tenant"`
	Source json.RawMessage `json:"source"`
}

// New returns a Store with keys under prefix (e.g. "hookyard:ingress").
func New(rdb redis.UniversalClient, prefix string) *Store {
	c, _ := lru.New[string, cached](cacheSize)
	return &Store{
		rdb: rdb, prefix: prefix,
		CacheTTL: 500 * time.Millisecond, LiveCacheTTL: time.Minute, VersionInterval: time.Second,
		now: time.Now, cache: c,
	}
}

// key is where a source is stored. Other services read its owner there
// (publish.Owners), so the key and the record's "tenant" field are shared.
func (s *Store) key(name string) string { return publish.SourceKey(s.prefix, name) }
func (s *Store) versionKey() string     { return s.prefix + ":sources:version" }
func (s *Store) channel() string        { return s.prefix + ":sources:changed" }
func (s *Store) index(tenant string) string {
	return s.prefix + ":tenant:" + tenant + ":sources"
}

func encode(tenant string, src *ingressv1.Source) ([]byte, error) {
	b, err := protojson.Marshal(src)
	if err != nil {
		return nil, fmt.Errorf("encode source: %w", err)
	}
	return json.Marshal(stored{Tenant: tenant, Source: b})
}

func decode(b []byte) (*Record, error) {
	var st stored
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode source: %w", err)
	}
	src := &ingressv1.Source{}
	if err := protojson.Unmarshal(st.Source, src); err != nil {
		return nil, fmt.Errorf("decode source: %w", err)
	}
	return &Record{Tenant: st.Tenant, Source: src}, nil
}

// Create stores a new source for tenant. src must be validated.
func (s *Store) Create(ctx context.Context, tenant string, src *ingressv1.Source) (*ingressv1.Source, error) {
	src = proto.Clone(src).(*ingressv1.Source)
	now := timestamppb.New(s.now())
	src.CreateTime, src.UpdateTime = now, now
	b, err := encode(tenant, src)
	if err != nil {
		return nil, err
	}
	ok, err := s.rdb.SetNX(ctx, s.key(src.GetName()), b, 0).Result()
	if err != nil {
		return nil, fmt.Errorf("create source: %w", err)
	}
	if !ok {
		return nil, ErrExists
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, s.index(tenant), redis.Z{Member: src.GetName()})
		s.changed(ctx, p, src.GetName())
		return nil
	})
	if err != nil {
		// Without its index entry the source would be invisible to List.
		s.rdb.Del(context.WithoutCancel(ctx), s.key(src.GetName()))
		return nil, fmt.Errorf("index source: %w", err)
	}
	s.invalidate(src.GetName())
	return src, nil
}

// load reads a source from Redis, bypassing the cache.
func (s *Store) load(ctx context.Context, name string) (*Record, error) {
	b, err := s.rdb.Get(ctx, s.key(name)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read source: %w", err)
	}
	return decode(b)
}

// Get returns tenant's source name.
func (s *Store) Get(ctx context.Context, tenant, name string) (*ingressv1.Source, error) {
	rec, err := s.load(ctx, name)
	if err != nil {
		return nil, err
	}
	if rec.Tenant != tenant {
		return nil, ErrNotFound
	}
	return rec.Source, nil
}

// Lookup resolves a receiver path to its source and owner. Results are
// cached for CacheTTL, including "not found", so a flood of requests to an
// unknown source costs Redis one read per interval.
func (s *Store) Lookup(ctx context.Context, name string) (*Record, error) {
	ttl := s.CacheTTL
	if s.live.Load() {
		ttl = s.LiveCacheTTL
	}
	s.mu.Lock()
	c, ok := s.cache.Get(name)
	gen := s.gen
	s.mu.Unlock()
	if ok && s.now().Sub(c.at) < ttl {
		if c.rec == nil {
			return nil, ErrNotFound
		}
		return c.rec, nil
	}
	v, err, _ := s.group.Do(name, func() (any, error) {
		// The load serves every request waiting on it: it must not end
		// when the first of them disconnects.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		rec, err := s.load(lctx, name)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if rec != nil {
			rec.Verifier, rec.VerifyErr = Compile(rec.Source)
			rec.StatsKey = s.StatsKey(rec.Tenant)
		}
		if s.beforeCache != nil {
			s.beforeCache()
		}
		s.mu.Lock()
		if s.gen == gen {
			s.cache.Add(name, cached{rec: rec, at: s.now()})
		}
		s.mu.Unlock()
		return rec, nil
	})
	if err != nil {
		return nil, err
	}
	rec, _ := v.(*Record)
	if rec == nil {
		return nil, ErrNotFound
	}
	return rec, nil
}

// Modify replaces tenant's source name with what fn makes of the stored
// one. fn runs under WATCH and again if the source changed meanwhile, so
// two concurrent updates (a secret rotation and a tolerance change, say)
// both take effect instead of the later one overwriting the earlier; an
// error from fn is returned as it is.
func (s *Store) Modify(ctx context.Context, tenant, name string, fn func(cur *ingressv1.Source) (*ingressv1.Source, error)) (*ingressv1.Source, error) {
	key := s.key(name)
	var out *ingressv1.Source
	for attempt := range 50 {
		if attempt > 0 {
			// Optimistic locking under contention: back off a little, with
			// jitter, so the writers do not keep colliding.
			select {
			case <-time.After(time.Duration(rand.Int64N(int64(min(attempt, 10)) * int64(time.Millisecond)))):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			old, err := owned(ctx, tx, key, tenant)
			if err != nil {
				return err
			}
			src, err := fn(proto.Clone(old.Source).(*ingressv1.Source))
			if err != nil {
				return err
			}
			src = proto.Clone(src).(*ingressv1.Source)
			src.Name, src.CreateTime, src.UpdateTime = name, old.Source.GetCreateTime(), timestamppb.New(s.now())
			nb, err := encode(tenant, src)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, nb, 0)
				s.changed(ctx, p, name)
				return nil
			})
			out = src
			return err
		}, key)
		switch {
		case errors.Is(err, redis.TxFailedErr):
			continue
		case err != nil:
			return nil, err
		}
		s.invalidate(name)
		return out, nil
	}
	return nil, fmt.Errorf("update source: %w", ErrConflict)
}

// owned reads the source at key inside a WATCH and returns it if tenant
// owns it; another tenant's source is ErrNotFound, as a missing one is.
func owned(ctx context.Context, tx *redis.Tx, key, tenant string) (*Record, error) {
	b, err := tx.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	old, err := decode(b)
	if err != nil {
		return nil, err
	}
	if old.Tenant != tenant {
		return nil, ErrNotFound
	}
	return old, nil
}

// Delete removes tenant's source.
func (s *Store) Delete(ctx context.Context, tenant, name string) error {
	key := s.key(name)
	err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		if _, err := owned(ctx, tx, key, tenant); err != nil {
			return err
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key)
			s.changed(ctx, p, name)
			return nil
		})
		return err
	}, key)
	s.invalidate(name)
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("delete source: %w", err)
	}
	if err := s.rdb.ZRem(ctx, s.index(tenant), name).Err(); err != nil {
		return fmt.Errorf("unindex source: %w", err)
	}
	return nil
}

// List returns a page of tenant's sources ordered by name. The page token is
// the last name returned, opaque to clients.
func (s *Store) List(ctx context.Context, tenant string, size int, token string) ([]*ingressv1.Source, string, error) {
	start := "-"
	if token != "" {
		last, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || len(last) == 0 {
			return nil, "", ErrBadToken
		}
		start = "(" + string(last)
	}
	names, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.index(tenant), Start: start, Stop: "+", ByLex: true, Count: int64(size) + 1,
	}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list sources: %w", err)
	}
	next := ""
	if len(names) > size {
		names = names[:size]
		next = base64.RawURLEncoding.EncodeToString([]byte(names[len(names)-1]))
	}
	out := make([]*ingressv1.Source, 0, len(names))
	for _, n := range names {
		src, err := s.Get(ctx, tenant, n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, src)
	}
	return out, next, nil
}

// changed queues, in the transaction that writes a source, the version
// increment and the message other replicas invalidate on. Both commit with
// the write or not at all.
func (s *Store) changed(ctx context.Context, p redis.Pipeliner, name string) {
	p.Incr(ctx, s.versionKey())
	p.Publish(ctx, s.channel(), name)
}

// invalidate drops name from this replica's cache.
func (s *Store) invalidate(name string) {
	s.mu.Lock()
	s.cache.Remove(name)
	s.gen++
	s.mu.Unlock()
}

// invalidateAll empties this replica's cache.
func (s *Store) invalidateAll() {
	s.mu.Lock()
	s.cache.Purge()
	s.gen++
	s.mu.Unlock()
}

// Live reports whether Run is following changes, so cached entries may be
// kept for LiveCacheTTL.
func (s *Store) Live() bool { return s.live.Load() }

// Run follows source changes made by any replica until ctx ends: it
// subscribes to their messages and compares the change version every
// VersionInterval. While either fails the cache falls back to CacheTTL.
func (s *Store) Run(ctx context.Context) error {
	defer s.live.Store(false)
	ps := s.rdb.Subscribe(ctx, s.channel())
	defer ps.Close()
	msgs := ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(10 * time.Second))
	tick := time.NewTicker(s.VersionInterval)
	defer tick.Stop()
	var (
		subscribed bool
		version    string
		versionOK  bool
	)
	checkVersion := func() {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := s.rdb.Get(cctx, s.versionKey()).Result()
		cancel()
		if errors.Is(err, redis.Nil) {
			v, err = "0", nil
		}
		if err != nil {
			versionOK = false
			return
		}
		if v != version || !versionOK {
			// A change not (yet) announced, or the first reading after a
			// gap: nothing cached before it can be trusted.
			s.invalidateAll()
		}
		version, versionOK = v, true
	}
	for {
		s.live.Store(subscribed && versionOK)
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			switch m := m.(type) {
			case *redis.Subscription:
				// Subscribed again after a reconnect: messages sent
				// meanwhile are lost.
				subscribed = m.Kind == "subscribe"
				s.invalidateAll()
				checkVersion()
			case *redis.Message:
				s.invalidate(m.Payload)
			}
		case <-tick.C:
			checkVersion()
		}
	}
}

// ErrBadToken reports a page token this store did not issue.
var ErrBadToken = errors.New("invalid page token")

func cloneSource(src *ingressv1.Source) *ingressv1.Source {
	return proto.Clone(src).(*ingressv1.Source)
}
