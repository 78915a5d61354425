// Command console serves the Hookyard web console: operator pages for
// deliveries, dead letters, endpoints, sources, tasks, queues and cache
// namespaces, over the four services' REST gateways.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hookyard/hookyard/cmd/console/internal/console"
	"github.com/hookyard/hookyard/platform/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "console: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var c console.Config
	var probe bool
	l := config.NewLoader("console")
	c.Register(l)
	// A command, not a setting: no environment variable.
	l.FS.BoolVar(&probe, "healthcheck", false, "ask the console on -http-addr for /healthz, exit 0 if it answers 200 and 1 if not; for container probes")
	if err := l.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if probe {
		return console.HealthCheck(ctx, c.HTTPAddr)
	}
	return console.Serve(ctx, c)
}
