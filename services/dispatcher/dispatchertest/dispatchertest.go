// Package dispatchertest runs a real dispatcher in the test's process, on
// the real RabbitMQ and Redis, with its gRPC server on a loopback port, for
// tests outside the dispatcher (the hookyard CLI's). It works only under
// queue names, Redis keys and event sources of its own and deletes them
// when the test ends.
package dispatchertest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/services/dispatcher/internal/dispatcher"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// Options adjust Start.
type Options struct {
	// Tenants to give API keys to; default "a" and "b" (each prefixed with
	// the server's id).
	Tenants []string
	// AllowCIDRs is HOOKYARD_ALLOW_CIDRS; default loopback.
	AllowCIDRs string
	// ServiceKey is HOOKYARD_SERVICE_KEY, with which other services call
	// CallbackService; empty refuses those calls.
	ServiceKey string
	// GRPCAddr is the gRPC listen address; default a free loopback port.
	GRPCAddr string
	// Tweak adjusts the dispatcher's configuration.
	Tweak func(*dispatcher.Config)
}

// Server is a running dispatcher.
type Server struct {
	// ID names the server's queues and keys; it is also the only event
	// source it consumes, so Publish uses it.
	ID string
	// GRPCAddr and HTTPAddr are the bound addresses.
	GRPCAddr, HTTPAddr string
	// Keys maps each tenant (as given in Options.Tenants) to its API key
	// and Tenants to its tenant id.
	Keys    map[string]string
	Tenants map[string]string
	// Dispatcher is the service itself.
	Dispatcher *dispatcher.Dispatcher
}

// Start runs a dispatcher until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	id := testenv.ID()
	if len(o.Tenants) == 0 {
		o.Tenants = []string{"a", "b"}
	}
	if o.AllowCIDRs == "" {
		o.AllowCIDRs = "127.0.0.0/8,::1/128"
	}
	cfg := dispatcher.Config{
		RetrySchedule:      "200ms,500ms,1s",
		Retention:          time.Hour,
		DefaultMaxInFlight: 10,
		DefaultTimeout:     5 * time.Second,
		RotationOverlap:    time.Hour,
		Concurrency:        32,
		BreakerFailures:    5,
		BreakerTimeout:     time.Second,
		QueuePrefix:        "hookyard.test.dispatcher." + id,
		KeyPrefix:          testenv.KeyPrefix(id),
		EventBindings:      id + ".#",
		SourcesKeyPrefix:   testenv.KeyPrefix(id),
		EventIDsKeyPrefix:  testenv.KeyPrefix(id) + ":ids",
		ServiceKey:         o.ServiceKey,
	}
	if o.Tweak != nil {
		o.Tweak(&cfg)
	}
	s := &Server{ID: id, Keys: map[string]string{}, Tenants: map[string]string{}}
	var pairs []string
	for _, name := range o.Tenants {
		tenant := name + "-" + id
		key := "key-" + name + "-" + id
		s.Tenants[name], s.Keys[name] = tenant, key
		pairs = append(pairs, tenant+":"+key)
	}
	keys, err := auth.ParseKeys(strings.Join(pairs, ","))
	if err != nil {
		t.Fatal(err)
	}
	q := cfg.Queues()
	conn := testenv.Rabbit(t, q.Declare)
	rdb := testenv.Redis(t, cfg.KeyPrefix)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := dispatcher.New(cfg, dispatcher.Deps{Rabbit: conn, Redis: rdb, Log: log, AllowCIDRs: o.AllowCIDRs, Registry: prometheus.NewRegistry(), APIKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	s.Dispatcher = d
	if o.GRPCAddr == "" {
		o.GRPCAddr = "127.0.0.1:0"
	}
	srv := server.New(server.Options{Name: "dispatcher", GRPCAddr: o.GRPCAddr, HTTPAddr: "127.0.0.1:0", Log: log, Keys: keys, Public: auth.PublicPrefixes(dispatcher.Public...), ShutdownTimeout: 5 * time.Second})
	d.Register(srv)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	s.GRPCAddr, s.HTTPAddr = srv.GRPCAddr(), srv.HTTPAddr()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{d.RunFanout, d.RunDeliveries, d.RunDeadLetters, d.Listen.Run, srv.Run} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	// Runs before the connections are closed and the keys deleted.
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		d.Publisher.Close()
		testenv.DeleteQueues(q.All(), q.Delays().Exchange())
	})
	return s
}

// Publish sends an event of the named tenant (a name of Options.Tenants)
// to hookyard.events as the ingress service does: a binary-mode CloudEvent
// with routing key <ID>.<typ>.
func (s *Server) Publish(t testing.TB, tenant, id, typ string, body []byte) {
	t.Helper()
	ten, ok := s.Tenants[tenant]
	if !ok {
		t.Fatalf("dispatchertest: no tenant %q", tenant)
	}
	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: id, Source: s.ID, Type: typ, Tenant: ten, Time: timestamppb.Now(),
		DataContentType: "application/json", Data: body,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Dispatcher.Publisher.Publish(ctx, rabbit.EventsExchange, cloudevent.RoutingKey(s.ID, typ), msg); err != nil {
		t.Fatal(fmt.Errorf("publish: %w", err))
	}
}

// WaitFor polls cond until it holds or timeout passes, then fails the test.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, timeout, what, cond)
}
