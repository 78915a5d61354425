// Command hookyard-faults sends webhooks through the four real services
// while it kills each of them, cuts the broker and restarts Redis, then
// prints what was acknowledged, delivered, duplicated and lost. It exits 1
// if anything acknowledged was lost or a task did not end.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hookyard/hookyard/test/internal/faults"
)

func main() {
	cfg := faults.Config{Out: os.Stdout}
	n, _ := strconv.Atoi(os.Getenv("FAULTS_N"))
	flag.IntVar(&cfg.N, "n", max(n, 0), "webhooks to send (env FAULTS_N; default 20000)")
	flag.IntVar(&cfg.Concurrency, "c", 16, "senders at once")
	flag.Float64Var(&cfg.FailRate, "fail", 0.2, "fraction of deliveries the subscriber answers 503")
	flag.DurationVar(&cfg.Gap, "gap", 15*time.Second, "time between two faults")
	flag.DurationVar(&cfg.BrokerCut, "broker-cut", 30*time.Second, "how long the broker is cut off")
	flag.BoolVar(&cfg.RestartRedis, "redis", true, "run a redis-server of our own and restart it")
	flag.BoolVar(&cfg.RestartRabbit, "rabbit", false, "run a RabbitMQ node of our own and restart it (else the shared broker is only cut off)")
	flag.DurationVar(&cfg.Drain, "drain", 20*time.Minute, "how long delivery may take after the last send")
	flag.Parse()
	if cfg.N == 0 {
		cfg.N = 20000
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := faults.Run(ctx, cfg)
	rep.Print(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	if rep.Lost > 0 || rep.TasksNotEnded > 0 || rep.GaveUp > 0 {
		fmt.Fprintln(os.Stderr, "faults: FAILED: something acknowledged was lost, a task did not end or a webhook was never acknowledged")
		os.Exit(1)
	}
}
