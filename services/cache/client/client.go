// Package client is the Go client of the Hookyard cache service, for
// services that read through it.
//
// With Near set, the client keeps an in-process copy of the values it read,
// in front of the service, and drops copies on the same Redis notices the
// service's replicas use (every invalidation and write is announced there
// after it is made). A copy read before a notice is never stored after it,
// every copy is dropped while the subscription is down, and a copy lives at
// most Near.TTL in any case.
package client

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/internal/entries"
	"github.com/hookyard/hookyard/services/cache/internal/near"
)

// DefaultChannel is the service's notice channel with the default key
// prefix (HOOKYARD_CACHE_KEY_PREFIX "hookyard:cache").
const DefaultChannel = "hookyard:cache:near"

// Options configures a Client.
type Options struct {
	// Near, when set, turns the in-process near cache on.
	Near *NearOptions
	// Log receives the near cache's warnings; nil discards them.
	Log *slog.Logger
}

// NearOptions sizes the client's near cache and names where notices come
// from.
type NearOptions struct {
	// Redis is the service's Redis (notices are pub/sub messages there).
	Redis redis.UniversalClient
	// Channel is the notice channel; empty means DefaultChannel.
	Channel string
	// MaxEntries and MaxBytes bound the copies per namespace; zero means
	// 10000 entries and 16 MiB.
	MaxEntries int
	MaxBytes   int64
	// TTL bounds a copy's life (how stale it can get if a notice is
	// lost); zero means 5s.
	TTL time.Duration
}

// Client calls a cache service.
type Client struct {
	api  cachev1.CacheServiceClient
	near *near.Cache
	cfg  *cachev1.Namespace // near settings in the shape near.Cache reads

	mu   sync.Mutex
	uids map[string]uid
}

type uid struct {
	id  string
	exp time.Time
}

// uidTTL is how long a namespace's uid is trusted before it is looked up
// again (a namespace deleted and created again gets a new one).
const uidTTL = 10 * time.Second

// New returns a client over conn. With o.Near set, call Run to receive
// notices; until it has subscribed, nothing is copied.
func New(conn grpc.ClientConnInterface, o Options) *Client {
	c := &Client{api: cachev1.NewCacheServiceClient(conn), uids: map[string]uid{}}
	if n := o.Near; n != nil && n.Redis != nil {
		ch := n.Channel
		if ch == "" {
			ch = DefaultChannel
		}
		log := o.Log
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		c.near = near.New(n.Redis, ch, log)
		nc := &cachev1.NearCache{MaxEntries: int32(n.MaxEntries), MaxBytes: n.MaxBytes}
		if nc.MaxEntries <= 0 {
			nc.MaxEntries = 10_000
		}
		if n.TTL > 0 {
			nc.Ttl = durationpb.New(n.TTL)
		}
		c.cfg = &cachev1.Namespace{NearCache: nc}
	}
	return c
}

// API returns the generated gRPC client, for the calls this package does
// not wrap (namespaces, batch reads, the write-behind backlog).
func (c *Client) API() cachev1.CacheServiceClient { return c.api }

// Run receives near-cache notices until ctx ends; it returns at once
// without a near cache.
func (c *Client) Run(ctx context.Context) error {
	if c.near == nil {
		return nil
	}
	return c.near.Run(ctx)
}

// WaitReady waits until the near cache's notice subscription is up, or
// ctx ends; without a near cache it returns at once.
func (c *Client) WaitReady(ctx context.Context) error {
	for c.near != nil && !c.near.Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// Credentials sends an API key as "authorization: Bearer <key>" with every
// call: grpc.WithPerRPCCredentials(client.Credentials(key)).
func Credentials(apiKey string) credentials.PerRPCCredentials { return bearer(apiKey) }

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false: the services serve plaintext gRPC
// behind a TLS-terminating proxy, and in development.
func (bearer) RequireTransportSecurity() bool { return false }

// uid returns the namespace's id, which its notices carry.
func (c *Client) uid(ctx context.Context, ns string) (string, error) {
	c.mu.Lock()
	u, ok := c.uids[ns]
	c.mu.Unlock()
	if ok && time.Now().Before(u.exp) {
		return u.id, nil
	}
	got, err := c.api.GetNamespace(ctx, &cachev1.GetNamespaceRequest{Name: ns})
	if err != nil {
		return "", err
	}
	if got.GetUid() == "" {
		return "", fmt.Errorf("namespace %q: the service sends no uid; it is older than this client", ns)
	}
	c.mu.Lock()
	c.uids[ns] = uid{id: got.GetUid(), exp: time.Now().Add(uidTTL)}
	c.mu.Unlock()
	return got.GetUid(), nil
}

// Entry is a value read from the cache.
type Entry struct {
	Value []byte
	// Near is whether the value came from the client's own copy.
	Near bool
	// Hit is whether the service answered from its cache (always true
	// for a near copy).
	Hit bool
	// Stale is whether the value is past its TTL.
	Stale bool
}

// Get reads key of namespace ns (filling it from the origin on a miss,
// as the namespace's strategy says). Errors are the service's gRPC
// statuses (status.Code(err) == codes.NotFound for a missing key).
func (c *Client) Get(ctx context.Context, ns, key string) (Entry, error) {
	var id string
	var mark uint64
	if c.near != nil {
		var err error
		if id, err = c.uid(ctx, ns); err != nil {
			return Entry{}, err
		}
		if e, ok := c.near.Get(id, c.cfg, key); ok && time.Now().Before(e.Fresh) {
			return Entry{Value: e.Value, Near: true, Hit: true}, nil
		}
		mark = c.near.Mark(id)
	}
	e, err := c.api.GetKey(ctx, &cachev1.GetKeyRequest{Ns: ns, Key: key})
	if err != nil {
		return Entry{}, err
	}
	if c.near != nil && !e.GetStale() && e.GetExpireTime() != nil {
		c.near.Put(id, c.cfg, key, &entries.Entry{Value: e.GetValue(), Fresh: e.GetExpireTime().AsTime(), Tags: e.GetTags()}, mark)
	}
	return Entry{Value: e.GetValue(), Hit: e.GetHit(), Stale: e.GetStale()}, nil
}

// Put writes key of namespace ns (to the origin too, as the namespace's
// strategy says). A later Get of this client sees the new value.
func (c *Client) Put(ctx context.Context, ns, key string, value []byte) error {
	_, err := c.api.PutKey(ctx, &cachev1.PutKeyRequest{Ns: ns, Key: key, Entry: &cachev1.Entry{Value: value}})
	c.drop(ns, key)
	return err
}

// Invalidate removes keys of namespace ns from the cache, on every replica
// and every client's near cache.
func (c *Client) Invalidate(ctx context.Context, ns string, keys ...string) error {
	_, err := c.api.InvalidateNamespace(ctx, &cachev1.InvalidateNamespaceRequest{Ns: ns, Keys: keys})
	c.drop(ns, keys...)
	return err
}

// drop removes this client's copies at once rather than when the notice
// comes back.
func (c *Client) drop(ns string, keys ...string) {
	if c.near == nil {
		return
	}
	c.mu.Lock()
	u, ok := c.uids[ns]
	c.mu.Unlock()
	if !ok {
		return
	}
	for _, k := range keys {
		c.near.Drop(u.id, k)
	}
}
