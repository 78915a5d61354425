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
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/publish"
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

// Store is the Redis-backed source registry with a short-lived local cache
// for the receiver's hot path.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// CacheTTL bounds how stale a replica's view of a source may be: an
	// update or delete takes effect on every replica within it.
	CacheTTL time.Duration
	now      func() time.Time

	mu    sync.Mutex
	cache map[string]cached
	group singleflight.Group
}

type cached struct {
	rec *Record
	at  time.Time
}

// Record is a stored source with its owner.
type Record struct {
	Tenant string
	Source *ingressv1.Source
}

type stored struct {
	Tenant string          `json:"tenant"`
	Source json.RawMessage `json:"source"`
}

// New returns a Store with keys under prefix (e.g. "hookyard:ingress").
func New(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix, CacheTTL: 500 * time.Millisecond, now: time.Now, cache: map[string]cached{}}
}

// key is where a source is stored. Other services read its owner there
// (publish.Owners), so the key and the record's "tenant" field are shared.
func (s *Store) key(name string) string { return publish.SourceKey(s.prefix, name) }
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
	if err := s.rdb.ZAdd(ctx, s.index(tenant), redis.Z{Member: src.GetName()}).Err(); err != nil {
		// Without its index entry the source would be invisible to List.
		s.rdb.Del(context.WithoutCancel(ctx), s.key(src.GetName()))
		return nil, fmt.Errorf("index source: %w", err)
	}
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
	s.mu.Lock()
	c, ok := s.cache[name]
	s.mu.Unlock()
	if ok && s.now().Sub(c.at) < s.CacheTTL {
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
		s.mu.Lock()
		if len(s.cache) > 100_000 {
			s.cache = map[string]cached{}
		}
		s.cache[name] = cached{rec: rec, at: s.now()}
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
			return nil
		})
		return err
	}, key)
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

// ErrBadToken reports a page token this store did not issue.
var ErrBadToken = errors.New("invalid page token")

func cloneSource(src *ingressv1.Source) *ingressv1.Source {
	return proto.Clone(src).(*ingressv1.Source)
}
