// Command hookyard-burst sends a burst of Stripe webhooks (50,000 by
// default) through the four real services as fast as the machine allows
// and prints ingress latency, the backlog's rise and drain, and the memory
// of every service.
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

	"github.com/hookyard/hookyard/test/internal/burst"
)

func main() {
	cfg := burst.Config{Out: os.Stdout}
	n, _ := strconv.Atoi(os.Getenv("BURST_N"))
	flag.IntVar(&cfg.N, "n", n, "webhooks to send (env BURST_N; default 50000)")
	flag.IntVar(&cfg.Concurrency, "c", 64, "senders at once")
	flag.DurationVar(&cfg.Drain, "drain", 30*time.Minute, "how long the backlog may take to drain")
	flag.Parse()
	if cfg.N <= 0 {
		cfg.N = 50000
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := burst.Run(ctx, cfg)
	rep.Print(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "burst:", err)
		os.Exit(1)
	}
	if rep.Delivered < rep.Acknowledged || rep.Acknowledged < rep.N {
		fmt.Fprintln(os.Stderr, "burst: FAILED: not every webhook was acknowledged and delivered")
		os.Exit(1)
	}
}
