// Command hookyard-soak sends Stripe webhooks through the four real
// services at a fixed rate for an hour (by default) and shows, sampled
// every minute, that goroutines, heap, RSS, open files, Redis memory and
// the broker's queues stay flat, and that nothing acknowledged was lost.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hookyard/hookyard/test/internal/soak"
)

func main() {
	cfg := soak.Config{Out: os.Stdout}
	flag.DurationVar(&cfg.Duration, "duration", time.Hour, "how long to send")
	flag.IntVar(&cfg.Rate, "rate", 1000, "webhooks per second (open loop)")
	flag.DurationVar(&cfg.Sample, "sample", time.Minute, "sample interval")
	flag.IntVar(&cfg.Concurrency, "c", 256, "senders; a webhook due while all are busy is counted as missed")
	flag.DurationVar(&cfg.Retention, "retention", 10*time.Minute, "event-id, delivery-record and task-result retention of the services")
	flag.IntVar(&cfg.TaskEvery, "task-every", 10, "every n-th webhook is an invoice.paid that runs a jobs task (the rest invoice.created)")
	flag.DurationVar(&cfg.Drain, "drain", 15*time.Minute, "how long delivery may take after the last send")
	flag.Parse()
	if cfg.Rate <= 0 || cfg.TaskEvery <= 0 || cfg.Concurrency <= 0 || cfg.Sample <= 0 || cfg.Duration <= 0 {
		fmt.Fprintln(os.Stderr, "soak: -rate, -task-every, -c, -sample and -duration must be positive")
		os.Exit(2)
	}
	// SIGINT or SIGTERM stops the sending; the run still drains, reports
	// (marked partial) and cleans up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("soak: %v at %d/s, a jobs task every %d webhooks, sampled every %v\n", cfg.Duration, cfg.Rate, cfg.TaskEvery, cfg.Sample)
	rep, err := soak.Run(ctx, cfg)
	rep.Print(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	failed := false
	if rep.Lost > 0 || rep.Delivered < rep.Acknowledged {
		fmt.Fprintln(os.Stderr, "soak: FAILED: acknowledged webhooks were not delivered")
		failed = true
	}
	if g := rep.Growing(); len(g) > 0 {
		fmt.Fprintln(os.Stderr, "soak: FAILED: growing:", strings.Join(g, ", "))
		failed = true
	}
	if failed {
		os.Exit(1)
	}
}
