// Command ingress receives third-party webhooks, verifies them and publishes
// them durably to RabbitMQ.
package main

import (
	"os"
	"runtime/debug"

	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/services/ingress/internal/ingress"
)

// gcPercent is the ingress's GOGC unless the environment sets one. Nearly
// everything a webhook allocates dies with its request and the live heap is
// a few MiB, so with Go's default of 100 the collector runs several times a
// second under load (about a tenth of the ingress CPU). 200 halves that for
// a few MiB more resident memory.
const gcPercent = 200

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	app.Main(ingress.Service())
}
