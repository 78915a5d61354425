package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/services/jobs/internal/jobs"
)

// serve runs one jobs service in this process, the way the jobs binary
// does, but with the completion events on a private exchange (so the
// benchmark's events stay off the shared hookyard.events). The benchmark
// starts it as a child process, so the child's RSS is the service's.
func serve(amqpURL, redisURL, id, grpcAddr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := jobs.Config{
		KeyPrefix: "hookyard:bench:jobs:" + id, QueuePrefix: "bench.jobs." + id,
		HTTPConcurrency: 8, Heartbeat: 5 * time.Second, ResultTTL: time.Hour, DeadTTL: time.Hour, MaxWaiters: 1000,
		EventsExchange: "bench.jobs." + id + ".events",
	}
	topo := rabbit.Topology{Events: cfg.EventsExchange, Unrouted: cfg.EventsExchange + ".unrouted"}
	rdb, err := redisconn.Open(redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	conn := rabbit.DialConfig(ctx, amqpURL, rabbit.Config{Setup: rabbit.DeclareFunc(topo.Declare)})
	defer conn.Close()
	for conn.Check(ctx) != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	j, err := jobs.New(cfg, jobs.Deps{Rabbit: conn, Redis: rdb, Log: log})
	if err != nil {
		return err
	}
	defer j.Publisher.Close()
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	if err := j.Topology(ch); err != nil {
		return err
	}
	ch.Close()
	keys, err := auth.ParseKeys(tenant + ":" + apiKey)
	if err != nil {
		return err
	}
	srv := server.New(server.Options{Name: "jobs", GRPCAddr: grpcAddr, HTTPAddr: "127.0.0.1:0", Log: log, Keys: keys, ShutdownTimeout: 5 * time.Second})
	j.Register(srv)
	if err := srv.Listen(); err != nil {
		return err
	}
	floor, err := serveFloor(ctx, amqpURL, id)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	fmt.Println("ready", srv.GRPCAddr(), floor) // the parent waits for this line
	done := make(chan struct{})
	go func() { _ = j.Run(ctx, time.Second); close(done) }()
	err = srv.Run(ctx)
	<-done
	return err
}
