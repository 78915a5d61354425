// Package cache wires the cache service: the namespace and key API, the
// read-through filler, the write-behind queue and the event consumer that
// invalidates keys, over one Redis, one broker connection and one SSRF
// policy for origins.
package cache

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/platform/config"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/platform/tally"
	"github.com/hookyard/hookyard/services/cache/internal/api"
	"github.com/hookyard/hookyard/services/cache/internal/entries"
	"github.com/hookyard/hookyard/services/cache/internal/fill"
	"github.com/hookyard/hookyard/services/cache/internal/invalidate"
	"github.com/hookyard/hookyard/services/cache/internal/metrics"
	"github.com/hookyard/hookyard/services/cache/internal/namespace"
	"github.com/hookyard/hookyard/services/cache/internal/near"
	"github.com/hookyard/hookyard/services/cache/internal/origin"
	"github.com/hookyard/hookyard/services/cache/internal/writebehind"
)

// Config holds the cache's own settings.
type Config struct {
	QueuePrefix      string
	KeyPrefix        string
	EventBindings    string
	Exchange         string
	EventConcurrency int
	WriteConcurrency int
	WriteMaxBackoff  time.Duration
}

// Register adds the settings to l.
func (c *Config) Register(l *config.Loader) {
	l.String(&c.QueuePrefix, "queue-prefix", "HOOKYARD_CACHE_QUEUE_PREFIX", "hookyard.cache", "prefix of the cache's queue names")
	l.String(&c.KeyPrefix, "key-prefix", "HOOKYARD_CACHE_KEY_PREFIX", "hookyard:cache", "prefix of the cache's Redis keys")
	l.String(&c.EventBindings, "event-bindings", "HOOKYARD_CACHE_EVENT_BINDINGS", "#", "comma-separated routing patterns the cache consumes from hookyard.events for invalidation")
	l.Int(&c.EventConcurrency, "event-concurrency", "HOOKYARD_CACHE_EVENT_CONCURRENCY", 32, "events applied at once by one replica")
	l.Int(&c.WriteConcurrency, "write-concurrency", "HOOKYARD_CACHE_WRITE_CONCURRENCY", 16, "write-behind origin writes sent at once by one replica")
	l.Duration(&c.WriteMaxBackoff, "write-max-backoff", "HOOKYARD_CACHE_WRITE_MAX_BACKOFF", 5*time.Minute, "longest delay between retries of a failing write-behind write")
}

func (c *Config) bindings() []string {
	var b []string
	for p := range strings.SplitSeq(c.EventBindings, ",") {
		if p = strings.TrimSpace(p); p != "" {
			b = append(b, p)
		}
	}
	return b
}

// EventsQueue is the name of the invalidation consumer's queue.
func (c *Config) EventsQueue() string { return c.QueuePrefix + ".events" }

// WritesQueue is the name of the write-behind queue.
func (c *Config) WritesQueue() string { return c.QueuePrefix + ".writes" }

// Declare declares the cache's queues.
func (c *Config) Declare(ch *amqp.Channel) error {
	if err := rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: c.EventsQueue(), Exchange: c.Exchange, Bindings: c.bindings()}); err != nil {
		return err
	}
	return writebehind.New(c.WritesQueue()).Declare(ch)
}

// Deps are the shared connections.
type Deps struct {
	Rabbit     *rabbit.Conn
	Redis      redis.UniversalClient
	Log        *slog.Logger
	Registry   prometheus.Registerer
	AllowCIDRs string
	// OriginClient replaces the SSRF-safe client (tests only).
	OriginClient *origin.Client
}

// Cache is the assembled service.
type Cache struct {
	API        *api.Cache
	Reader     *fill.Reader
	Writes     *writebehind.Queue
	Events     *invalidate.Consumer
	Publisher  *rabbit.Publisher
	Namespaces *namespace.Store
	Entries    *entries.Store
	Near       *near.Cache
	rabbit     *rabbit.Conn
}

// New assembles a Cache.
func New(c Config, d Deps) (*Cache, error) {
	allow, err := ssrf.ParseCIDRs(d.AllowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("HOOKYARD_ALLOW_CIDRS: %w", err)
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	policy := ssrf.Policy{Allow: allow}
	m := metrics.New(d.Registry)
	oc := d.OriginClient
	if oc == nil {
		oc = &origin.Client{HTTP: policy.Client(ssrf.ClientOptions{Timeout: namespace.MaxTimeout, MaxIdleConnsPerHost: 64})}
	}
	nss := namespace.New(d.Redis, c.KeyPrefix)
	es := entries.New(d.Redis, c.KeyPrefix)
	es.Channel = c.KeyPrefix + ":near"
	nc := near.New(d.Redis, es.Channel, d.Log)
	pub := rabbit.NewPublisher(d.Rabbit, rabbit.PublisherConfig{})
	reader := fill.NewReader(es, oc, m, d.Log)
	reader.Near = nc
	wq := writebehind.New(c.WritesQueue())
	wq.Rdb, wq.Entries, wq.Namespaces, wq.Origin, wq.Pub, wq.Metrics, wq.Log = d.Redis, es, nss, oc, pub, m, d.Log
	wq.Concurrency = max(c.WriteConcurrency, 1)
	wq.Prefix = c.KeyPrefix
	if c.WriteMaxBackoff > 0 {
		wq.MaxBackoff = c.WriteMaxBackoff
	}
	reader.Pending = wq.PendingValue
	ev := &invalidate.Consumer{
		Queue: c.EventsQueue(), Exchange: c.Exchange, Bindings: c.bindings(), Entries: es, Namespaces: nss,
		Pub: pub, Metrics: m, Log: d.Log, Concurrency: max(c.EventConcurrency, 1), RetryDelay: time.Second,
	}
	return &Cache{
		API: &api.Cache{
			Namespaces: nss, Entries: es, Reader: reader, Origin: oc, Writes: wq,
			Policy: policy, Metrics: m, Log: d.Log, Stats: tally.New(d.Redis),
		},
		Reader: reader, Writes: wq, Events: ev, Publisher: pub, Namespaces: nss, Entries: es, Near: nc, rabbit: d.Rabbit,
	}, nil
}

// Register adds the cache service to srv, on gRPC and on the REST gateway.
func (c *Cache) Register(srv *server.Server) {
	cachev1.RegisterCacheServiceServer(srv.GRPC, c.API)
	srv.RegisterGateway(server.GatewayHandler(cachev1.RegisterCacheServiceHandlerClient, cachev1.NewCacheServiceClient))
}

// RunEvents consumes events for invalidation until ctx ends.
func (c *Cache) RunEvents(ctx context.Context) error { return c.Events.Run(ctx, c.rabbit) }

// RunWrites sends write-behind writes to origins until ctx ends.
func (c *Cache) RunWrites(ctx context.Context) error { return c.Writes.Run(ctx, c.rabbit) }

// RunStats writes the read counters once a second until ctx ends.
func (c *Cache) RunStats(ctx context.Context, log *slog.Logger) error {
	c.API.Stats.Run(ctx, func(err error) { log.WarnContext(ctx, "read counters", "err", err) })
	return nil
}

// Close stops background refreshes and the publisher.
func (c *Cache) Close() error {
	_ = c.Reader.Close()
	return c.Publisher.Close()
}

// Service describes the cache binary.
func Service() app.Service {
	var c Config
	return app.Service{
		Name:     "cache",
		Ports:    config.Ports{HTTP: ":8082", GRPC: ":9092"},
		Flags:    c.Register,
		Topology: []func(*amqp.Channel) error{func(ch *amqp.Channel) error { return c.Declare(ch) }},
		Build: func(_ context.Context, rt *app.Runtime) error {
			cc, err := New(c, Deps{Rabbit: rt.Rabbit, Redis: rt.Redis, Log: rt.Log, Registry: rt.Registry, AllowCIDRs: rt.Config.AllowCIDRs})
			if err != nil {
				return err
			}
			rt.OnClose(cc.Close)
			cc.Register(rt.Server)
			rt.Go("events", cc.RunEvents)
			rt.Go("writes", cc.RunWrites)
			rt.Go("near-cache", cc.Near.Run)
			rt.Go("write-sweeper", cc.Writes.RunSweeper)
			rt.Go("namespace-stats", func(ctx context.Context) error { return cc.RunStats(ctx, rt.Log) })
			return nil
		},
	}
}
