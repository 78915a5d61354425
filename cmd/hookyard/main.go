// Command hookyard is the command line of Hookyard: it manages sources,
// endpoints, messages, tasks and cache namespaces over gRPC, forwards a
// tenant's events to a local server (listen) and follows them live (tail).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
