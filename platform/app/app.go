// Package app runs a Hookyard service: it parses configuration, connects to
// RabbitMQ and Redis, builds the server, runs the service's background
// workers and shuts everything down in order on SIGTERM. A service's main
// is one call to Main; its wiring is its Build function.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/config"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// Service describes one binary.
type Service struct {
	Name  string
	Ports config.Ports
	// Flags registers the service's own settings.
	Flags func(*config.Loader)
	// Public lists gRPC methods open without an API key (health and
	// reflection always are).
	Public []string
	// Topology declares the service's queues. It runs, after the shared
	// exchanges, on every (re)connect, before the broker counts as ready.
	Topology []func(*amqp.Channel) error
	// Build registers the service's APIs, routes and workers on rt.
	Build func(ctx context.Context, rt *Runtime) error
}

// Runtime is what a service's Build receives: the shared connections and the
// server to register on.
type Runtime struct {
	Config   config.Common
	Log      *slog.Logger
	Server   *server.Server
	Rabbit   *rabbit.Conn
	Redis    redis.UniversalClient
	Registry *prometheus.Registry

	workers     []worker
	closers     []func() error
	workerGrace time.Duration
}

type worker struct {
	name string
	fn   func(context.Context) error
}

// Go adds a background worker (a consumer, a scheduler). It runs until the
// service shuts down; when its context ends it must stop taking new work,
// finish or return what it holds, and return.
func (rt *Runtime) Go(name string, fn func(context.Context) error) {
	rt.workers = append(rt.workers, worker{name, fn})
}

// WaitForWorkers makes shutdown wait up to d for the workers to return, when
// that is longer than the configured shutdown timeout: a worker whose
// in-flight work may take longer (an outbound request with a long
// timeout) would otherwise have it cut, and its connections closed, in
// the middle.
func (rt *Runtime) WaitForWorkers(d time.Duration) { rt.workerGrace = max(rt.workerGrace, d) }

// OnClose registers cleanup that runs after the server and workers stopped,
// before the connections close.
func (rt *Runtime) OnClose(fn func() error) { rt.closers = append(rt.closers, fn) }

// Main runs s with the process arguments and exits.
func Main(s Service) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := Run(ctx, s, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", s.Name, err)
		os.Exit(1)
	}
}

// NewLogger returns the JSON logger every service uses.
func NewLogger(level, service string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	h := trace.LogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	return slog.New(h).With("service", service), nil
}

// Run runs s until ctx ends, then shuts down gracefully and returns nil.
func Run(ctx context.Context, s Service, args []string) error {
	var cfg config.Common
	var probe bool
	l := config.NewLoader(s.Name)
	cfg.Register(l, s.Ports)
	if s.Flags != nil {
		s.Flags(l)
	}
	// A command, not a setting: no environment variable.
	l.FS.BoolVar(&probe, "healthcheck", false, "ask the service running on -grpc-addr whether it is SERVING (gRPC health), exit 0 if so and 1 if not; for container and orchestrator probes")
	if err := l.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if probe {
		return HealthCheck(ctx, cfg.GRPCAddr)
	}
	log, err := NewLogger(cfg.LogLevel, s.Name)
	if err != nil {
		return err
	}
	stopTracing, err := trace.Setup(ctx, s.Name)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn("trace flush", "err", err)
		}
	}()
	keys, err := auth.ParseKeys(cfg.APIKeys)
	if err != nil {
		return err
	}
	if keys.Len() == 0 {
		log.Warn("no API keys configured (HOOKYARD_API_KEYS): every management call will be refused")
	}
	// A bad broker list is refused here, at start, rather than retried
	// for ever by the connection loop.
	if _, err := rabbit.ParseURLs(cfg.AMQPURL); err != nil {
		return fmt.Errorf("HOOKYARD_AMQP_URL: %w", err)
	}
	rdb, err := redisconn.Open(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("HOOKYARD_REDIS_URL: %w", err)
	}
	waitReplicas, err := redisconn.ParseWaitReplicas(cfg.RedisWaitReplicas)
	if err == nil {
		err = redisconn.SetWait(rdb, redisconn.WaitConfig{Replicas: waitReplicas, Timeout: cfg.RedisWaitTimeout})
	}
	if err != nil {
		rdb.Close()
		return fmt.Errorf("HOOKYARD_REDIS_WAIT_REPLICAS/HOOKYARD_REDIS_WAIT_TIMEOUT: %w", err)
	}
	// The broker connection outlives ctx: workers still ack and publish
	// while they drain after the signal.
	connCtx, closeConn := context.WithCancel(context.Background())
	defer closeConn()
	rmq := rabbit.DialConfig(connCtx, cfg.AMQPURL, rabbit.Config{
		Logger: log,
		Name:   s.Name,
		Setup:  rabbit.DeclareFunc(append([]func(*amqp.Channel) error{rabbit.DeclareTopology}, s.Topology...)...),
	})

	reg := prometheus.NewRegistry()
	srv := server.New(server.Options{
		Name:            s.Name,
		GRPCAddr:        cfg.GRPCAddr,
		HTTPAddr:        cfg.HTTPAddr,
		Log:             log,
		Keys:            keys,
		Public:          auth.PublicPrefixes(s.Public...),
		Registry:        reg,
		ShutdownTimeout: cfg.ShutdownTimeout,
		MaxBodyBytes:    cfg.MaxBodyBytes,
		BodyMemoryBytes: cfg.BodyMemoryBytes,
		Checks: []server.Check{
			{Name: "rabbitmq", Fn: rmq.Check},
			{Name: "redis", Fn: func(ctx context.Context) error { return redisconn.Check(ctx, rdb) }},
		},
	})
	rt := &Runtime{Config: cfg, Log: log, Server: srv, Rabbit: rmq, Redis: rdb, Registry: reg}
	defer func() {
		for i := len(rt.closers) - 1; i >= 0; i-- {
			if err := rt.closers[i](); err != nil {
				log.Warn("close", "err", err)
			}
		}
		rmq.Close()
		rdb.Close()
	}()
	if err := s.Build(ctx, rt); err != nil {
		return fmt.Errorf("build %s: %w", s.Name, err)
	}
	if err := srv.Listen(); err != nil {
		return err
	}

	// The workers and the server run until ctx ends or one of them fails;
	// either way all of them are stopped and waited for.
	g, runCtx := errgroup.WithContext(ctx)
	for _, w := range rt.workers {
		g.Go(func() error {
			if err := w.fn(runCtx); err != nil && runCtx.Err() == nil {
				return fmt.Errorf("worker %s: %w", w.name, err)
			}
			return nil
		})
	}
	g.Go(func() error { return srv.Run(runCtx) })
	<-runCtx.Done()
	log.Info("stopping", "reason", context.Cause(runCtx))
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			log.Info("stopped")
		}
		return err
	case <-time.After(max(cfg.ShutdownTimeout, rt.workerGrace) + 5*time.Second):
		log.Error("workers did not stop within the shutdown timeout")
		return nil
	}
}
