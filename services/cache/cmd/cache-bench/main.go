// Command cache-bench measures the cache against real Redis and RabbitMQ in
// one run and prints the figures side by side: a hit over gRPC against a
// raw go-redis GET of the same value, a near-cache hit in the Go client, a
// read-through miss in front of a slow origin, a stampede of one cold key
// over two replicas, and a read-heavy mix with invalidations arriving as
// events on the bus. It exits non-zero if the stampede loads the origin
// more than once.
package main

import (
	"flag"
	"log"
	"time"
)

func main() {
	var o options
	flag.IntVar(&o.n, "n", 5000, "reads per hit measurement and operations in the mix")
	flag.IntVar(&o.misses, "misses", 200, "read-through misses")
	flag.IntVar(&o.conc, "c", 16, "concurrent readers for throughput")
	flag.DurationVar(&o.originDelay, "origin-delay", 20*time.Millisecond, "origin latency")
	flag.IntVar(&o.size, "size", 100, "value bytes")
	flag.IntVar(&o.stampede, "stampede", 1000, "concurrent Gets of one cold key over two replicas")
	flag.DurationVar(&o.stampedeDelay, "stampede-delay", 300*time.Millisecond, "origin latency in the stampede")
	flag.IntVar(&o.mixKeys, "mix-keys", 500, "hot keys in the read-heavy mix")
	flag.Float64Var(&o.mixMiss, "mix-miss", 0.05, "share of mix reads that go to cold keys")
	flag.IntVar(&o.mixEvents, "mix-events", 20, "invalidation events published per second during the mix")
	flag.StringVar(&o.memProfile, "memprofile", "", "write an allocation profile of the gRPC hit row to this file")
	flag.BoolVar(&o.hitsOnly, "hits-only", false, "measure the hit rows only (no stampede, no mix)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the gRPC hit row to this file")
	flag.StringVar(&o.logLevel, "log-level", "info", "the servers' log level, as HOOKYARD_LOG_LEVEL (production default info), or off; lines go to /dev/null")
	flag.BoolVar(&o.trace, "trace", true, "install the tracer provider as the services do (no exporter unless OTEL_EXPORTER_OTLP_ENDPOINT is set)")
	flag.Parse()
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}
