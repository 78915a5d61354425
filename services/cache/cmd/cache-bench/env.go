package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/cache/client"
	"github.com/hookyard/hookyard/services/cache/internal/cache"
	"github.com/hookyard/hookyard/services/cache/internal/writebehind"
)

type options struct {
	n, misses, conc, size  int
	originDelay            time.Duration
	stampede               int
	stampedeDelay          time.Duration
	mixKeys, mixEvents     int
	mixMiss                float64
	cpuProfile, memProfile string
	hitsOnly               bool
	// logLevel is the servers' log level ("off" for none); their JSON
	// lines go to /dev/null, a write per line as to a container's stderr.
	logLevel string
	trace    bool
}

// env is two cache replicas sharing Redis and the broker, as two pods
// would, under a key prefix, queue prefix and exchange of this run's own,
// in front of one local origin.
type env struct {
	o        options
	rdb      redis.UniversalClient
	prefix   string
	value    []byte
	origin   *httptest.Server
	loads    atomic.Int64 // origin loads under /slow/
	topo     rabbit.Topology
	pub      *rabbit.Publisher
	replicas []*replica
	// floors are the no-op call's servers: bare, tuned, and (last) the
	// first replica's own.
	floors  []floorTarget
	cleanup []func()
}

type replica struct {
	cc  *grpc.ClientConn
	svc *cache.Cache
	cli *client.Client
}

const apiKey = "bench-key-0001"

func (e *env) later(fn func()) { e.cleanup = append(e.cleanup, fn) }

// close undoes setup in reverse: replicas stop before their queues and
// keys are deleted.
func (e *env) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
}

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newEnv(ctx context.Context, o options) (*env, error) {
	e := &env{o: o}
	ok := false
	defer func() {
		if !ok {
			e.close()
		}
	}()
	// The tracer provider every service installs (platform/app): spans
	// are made for every call even when none is exported.
	if o.trace {
		stopTracing, err := trace.Setup(ctx, "cache")
		if err != nil {
			return nil, err
		}
		e.later(func() { _ = stopTracing(context.Background()) })
	}
	rdb, err := redisconn.Open(getenv("HOOKYARD_REDIS_URL", "redis://127.0.0.1:6379/0"))
	if err != nil {
		return nil, err
	}
	e.rdb = rdb
	e.later(func() { rdb.Close() })
	id := fmt.Sprintf("%x", rand.Uint64())
	e.prefix = "hookyard:bench:cache:" + id
	e.later(func() { deleteKeys(rdb, e.prefix) })

	e.value = make([]byte, o.size)
	for i := range e.value {
		e.value[i] = 'a' + byte(i%26)
	}
	e.origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow/") {
			e.loads.Add(1)
			time.Sleep(o.stampedeDelay)
		} else {
			time.Sleep(o.originDelay)
		}
		_, _ = w.Write(e.value)
	}))
	e.later(e.origin.Close)

	e.topo = rabbit.Topology{Events: "bench-cache-" + id + ".events", Unrouted: "bench-cache-" + id + ".unrouted"}
	cfg := cache.Config{QueuePrefix: "bench-cache-" + id, KeyPrefix: e.prefix, EventBindings: "#", Exchange: e.topo.Events, EventConcurrency: 8, WriteConcurrency: 4}
	amqpURL := getenv("HOOKYARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	queues := []string{cfg.EventsQueue(), rabbit.DLQName(cfg.EventsQueue()), cfg.WritesQueue(), rabbit.DLQName(cfg.WritesQueue()), e.topo.Unrouted}
	queues = append(queues, writebehind.New(cfg.WritesQueue()).Ladder.Queues()...)
	e.later(func() { deleteTopology(amqpURL, queues, []string{e.topo.Events, e.topo.Unrouted}) })
	conn := rabbit.DialConfig(ctx, amqpURL, rabbit.Config{Setup: rabbit.DeclareFunc(e.topo.Declare, cfg.Declare), Logger: slog.New(slog.DiscardHandler)})
	e.later(func() { conn.Close() })
	if err := waitFor(ctx, "the broker", func() error { return conn.Check(ctx) }); err != nil {
		return nil, err
	}
	e.pub = rabbit.NewPublisher(conn, rabbit.PublisherConfig{})
	e.later(func() { e.pub.Close() })

	keys, err := auth.ParseKeys("bench:" + apiKey)
	if err != nil {
		return nil, err
	}
	log, err := e.logger(o.logLevel)
	if err != nil {
		return nil, err
	}
	if e.floors, err = e.floorTargets(ctx, log); err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	e.later(func() { stop(); wg.Wait() })
	for i := range 2 {
		svc, err := cache.New(cfg, cache.Deps{Rabbit: conn, Redis: rdb, AllowCIDRs: "127.0.0.0/8", Log: log})
		if err != nil {
			return nil, err
		}
		e.later(func() { _ = svc.Close() })
		srv := server.New(server.Options{Name: "cache", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Keys: keys, Log: log})
		svc.Register(srv)
		if i == 0 {
			srv.GRPC.RegisterService(&floorDesc, &floor{value: e.value})
		}
		if err := srv.Listen(); err != nil {
			return nil, err
		}
		for _, fn := range []func(context.Context) error{srv.Run, svc.Near.Run, svc.RunEvents} {
			wg.Add(1)
			go func() { defer wg.Done(); _ = fn(sctx) }()
		}
		cc, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(client.Credentials(apiKey)))
		if err != nil {
			return nil, err
		}
		e.later(func() { cc.Close() })
		e.replicas = append(e.replicas, &replica{cc: cc, svc: svc, cli: client.New(cc, client.Options{})})
		if i == 0 {
			e.floors = append(e.floors, floorTarget{name: "no-op gRPC, cache's own server", cc: cc})
		}
	}
	ok = true
	return e, nil
}

// logger is the services' logger (app.NewLogger) writing to /dev/null.
func (e *env) logger(level string) (*slog.Logger, error) {
	if level == "off" {
		return slog.New(slog.DiscardHandler), nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	e.later(func() { null.Close() })
	return slog.New(trace.LogHandler(slog.NewJSONHandler(null, &slog.HandlerOptions{Level: l}))).With("service", "cache"), nil
}

// createNamespace creates ns of tenant "bench", waiting until the
// replica's server answers.
func (e *env) createNamespace(ctx context.Context, ns *cachev1.Namespace) error {
	if ns.Ttl == nil {
		ns.Ttl = durationpb.New(time.Hour)
	}
	return waitFor(ctx, "namespace "+ns.GetName(), func() error {
		_, err := e.replicas[0].cli.API().CreateNamespace(ctx, &cachev1.CreateNamespaceRequest{Namespace: ns})
		return err
	})
}

// waitFor retries fn for up to 30 s.
func waitFor(ctx context.Context, what string, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func deleteKeys(rdb redis.UniversalClient, prefix string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}

func deleteTopology(url string, queues, exchanges []string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	// A failed delete closes the channel, so each gets its own.
	for _, q := range queues {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
			ch.Close()
		}
	}
	for _, x := range exchanges {
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(x, false, false)
			ch.Close()
		}
	}
}

// peakRSS is the process's peak resident set (VmHWM), in MiB.
func peakRSS() (float64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%f kB", &kb); err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", rest, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
