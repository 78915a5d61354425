// Package namespace keeps the cache namespaces of each tenant in Redis:
// their origin, strategy and policy. Every read is scoped to a tenant, so
// another tenant's namespace is simply not found.
//
// Each namespace gets a random id when it is created; its cached data lives
// under that id, so a namespace deleted and created again under the same
// name starts empty instead of finding its predecessor's values.
package namespace

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
)

// Errors of the store.
var (
	ErrNotFound = errors.New("namespace not found")
	ErrExists   = errors.New("namespace exists")
	ErrConflict = errors.New("the namespace is being changed by other requests; retry")
	ErrBadToken = errors.New("invalid page token")
)

// Record is a stored namespace with its owner and data id.
type Record struct {
	Tenant string
	ID     string
	NS     *cachev1.Namespace
}

type stored struct {
	Tenant string          `json:"tenant"`
	ID     string          `json:"id"`
	NS     json.RawMessage `json:"ns"`
}

// Store is the Redis-backed namespace registry. Lookups, which every cache
// read makes, are served from a short-lived local copy.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// CacheTTL bounds how long a replica keeps using a namespace's old
	// settings after an update or delete.
	CacheTTL time.Duration

	// Bounded LRUs: when full, the least recently used entry goes, not
	// the whole map (which would send every replica's reads to Redis at
	// once).
	cache   *lru.Cache[string, cached]
	tenants *lru.Cache[string, cachedList]
	group   singleflight.Group
}

type cached struct {
	rec *Record
	at  time.Time
}

type cachedList struct {
	recs []*Record
	at   time.Time
}

// New returns a Store with keys under prefix (e.g. "hookyard:cache").
func New(rdb redis.UniversalClient, prefix string) *Store {
	cache, _ := lru.New[string, cached](100_000)
	tenants, _ := lru.New[string, cachedList](10_000)
	return &Store{rdb: rdb, prefix: prefix, CacheTTL: time.Second, cache: cache, tenants: tenants}
}

func (s *Store) key(tenant, name string) string { return s.prefix + ":ns:" + tenant + ":" + name }
func (s *Store) index(tenant string) string     { return s.prefix + ":tenant:" + tenant + ":ns" }

func encode(r *Record) ([]byte, error) {
	b, err := protojson.Marshal(r.NS)
	if err != nil {
		return nil, fmt.Errorf("encode namespace: %w", err)
	}
	return json.Marshal(stored{Tenant: r.Tenant, ID: r.ID, NS: b})
}

func decode(b []byte) (*Record, error) {
	var st stored
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode namespace: %w", err)
	}
	ns := &cachev1.Namespace{}
	if err := protojson.Unmarshal(st.NS, ns); err != nil {
		return nil, fmt.Errorf("decode namespace: %w", err)
	}
	return &Record{Tenant: st.Tenant, ID: st.ID, NS: ns}, nil
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Create stores a new, validated namespace for tenant.
func (s *Store) Create(ctx context.Context, tenant string, ns *cachev1.Namespace) (*Record, error) {
	ns = proto.Clone(ns).(*cachev1.Namespace)
	now := timestamppb.Now()
	ns.CreateTime, ns.UpdateTime = now, now
	rec := &Record{Tenant: tenant, ID: newID(), NS: ns}
	b, err := encode(rec)
	if err != nil {
		return nil, err
	}
	key := s.key(tenant, ns.GetName())
	ok, err := s.rdb.SetNX(ctx, key, b, 0).Result()
	if err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	if !ok {
		return nil, ErrExists
	}
	if err := s.rdb.ZAdd(ctx, s.index(tenant), redis.Z{Member: ns.GetName()}).Err(); err != nil {
		s.rdb.Del(context.WithoutCancel(ctx), key)
		return nil, fmt.Errorf("index namespace: %w", err)
	}
	s.forget(tenant, ns.GetName())
	return rec, nil
}

// Get reads tenant's namespace from Redis.
func (s *Store) Get(ctx context.Context, tenant, name string) (*Record, error) {
	b, err := s.rdb.Get(ctx, s.key(tenant, name)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read namespace: %w", err)
	}
	rec, err := decode(b)
	if err != nil {
		return nil, err
	}
	if rec.Tenant != tenant {
		return nil, ErrNotFound
	}
	return rec, nil
}

// Lookup is Get through the local copy (at most CacheTTL old), for the
// read and write paths.
func (s *Store) Lookup(ctx context.Context, tenant, name string) (*Record, error) {
	k := tenant + "\x00" + name
	c, ok := s.cache.Get(k)
	if ok && time.Since(c.at) < s.CacheTTL {
		if c.rec == nil {
			return nil, ErrNotFound
		}
		return c.rec, nil
	}
	v, err, _ := s.group.Do(k, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		rec, err := s.Get(lctx, tenant, name)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		s.cache.Add(k, cached{rec: rec, at: time.Now()})
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

// Tenant returns all of tenant's namespaces through a local copy at most
// CacheTTL old, for matching events against invalidation rules.
func (s *Store) Tenant(ctx context.Context, tenant string) ([]*Record, error) {
	c, ok := s.tenants.Get(tenant)
	if ok && time.Since(c.at) < s.CacheTTL {
		return c.recs, nil
	}
	v, err, _ := s.group.Do("tenant\x00"+tenant, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		names, err := s.rdb.ZRange(lctx, s.index(tenant), 0, -1).Result()
		if err != nil {
			return nil, fmt.Errorf("list namespaces: %w", err)
		}
		var recs []*Record
		for _, n := range names {
			rec, err := s.Get(lctx, tenant, n)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			recs = append(recs, rec)
		}
		s.tenants.Add(tenant, cachedList{recs: recs, at: time.Now()})
		return recs, nil
	})
	if err != nil {
		return nil, err
	}
	recs, _ := v.([]*Record)
	return recs, nil
}

func (s *Store) forget(tenant, name string) {
	s.cache.Remove(tenant + "\x00" + name)
	s.tenants.Remove(tenant)
}

// Modify replaces tenant's namespace with what fn makes of the stored one,
// under WATCH, retrying if it changed meanwhile. fn's errors are returned
// as they are.
func (s *Store) Modify(ctx context.Context, tenant, name string, fn func(cur *cachev1.Namespace) (*cachev1.Namespace, error)) (*Record, error) {
	key := s.key(tenant, name)
	for range 20 {
		var out *Record
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			b, err := tx.Get(ctx, key).Bytes()
			if errors.Is(err, redis.Nil) {
				return ErrNotFound
			}
			if err != nil {
				return err
			}
			old, err := decode(b)
			if err != nil {
				return err
			}
			if old.Tenant != tenant {
				return ErrNotFound
			}
			ns, err := fn(proto.Clone(old.NS).(*cachev1.Namespace))
			if err != nil {
				return err
			}
			ns = proto.Clone(ns).(*cachev1.Namespace)
			ns.Name, ns.CreateTime, ns.UpdateTime = name, old.NS.GetCreateTime(), timestamppb.Now()
			out = &Record{Tenant: tenant, ID: old.ID, NS: ns}
			nb, err := encode(out)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, nb, 0)
				return nil
			})
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.forget(tenant, name)
		return out, nil
	}
	return nil, ErrConflict
}

// Delete removes tenant's namespace and returns what it was, so the caller
// can retire its data.
func (s *Store) Delete(ctx context.Context, tenant, name string) (*Record, error) {
	rec, err := s.Get(ctx, tenant, name)
	if err != nil {
		return nil, err
	}
	if err := s.rdb.Del(ctx, s.key(tenant, name)).Err(); err != nil {
		return nil, fmt.Errorf("delete namespace: %w", err)
	}
	if err := s.rdb.ZRem(ctx, s.index(tenant), name).Err(); err != nil {
		return nil, fmt.Errorf("unindex namespace: %w", err)
	}
	s.forget(tenant, name)
	return rec, nil
}

// List returns a page of tenant's namespaces ordered by name.
func (s *Store) List(ctx context.Context, tenant string, size int, token string) ([]*Record, string, error) {
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
		return nil, "", fmt.Errorf("list namespaces: %w", err)
	}
	next := ""
	if len(names) > size {
		names = names[:size]
		next = base64.RawURLEncoding.EncodeToString([]byte(names[len(names)-1]))
	}
	out := make([]*Record, 0, len(names))
	for _, n := range names {
		rec, err := s.Get(ctx, tenant, n)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, rec)
	}
	return out, next, nil
}
