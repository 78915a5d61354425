// Command dispatcher-bench measures the dispatcher end to end and against a
// bare HTTP client loop in one run, and, in the same run, floors: the
// least a consumer must do per delivery (consume, signed POSTs, ack), the
// same with the delivered records in Redis that effectively-once output
// needs, the same through the dispatcher's admission (records and shared
// in-flight slots), and the least a POST /v1/messages handler must do in
// front of it. Then it measures how a slow endpoint affects healthy ones
// and how much memory a large retry backlog costs, and prints the figures
// and the performance targets. It exits 0 when the run completed
// (whether or not the targets were met) and 1 when the run itself failed.
//
//	go run ./cmd/dispatcher-bench -n 5000 -c 64 -pending 100000
//
// It needs RabbitMQ and Redis on loopback (HOOKYARD_AMQP_URL and
// HOOKYARD_REDIS_URL override the defaults) and the go tool, which builds
// the dispatcher binary under test.
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

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/services/dispatcher/internal/bench"
)

func main() {
	cfg := bench.Config{
		AMQPURL:  loadtest.Env("HOOKYARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
		RedisURL: loadtest.Env("HOOKYARD_REDIS_URL", "redis://127.0.0.1:6379/0"),
		Progress: os.Stderr,
	}
	var (
		timeout     time.Duration
		floorQ      string
		floorURLs   string
		floorRecord string
		floorHTTP   string
		floorAdmit  bool
	)
	flag.IntVar(&cfg.N, "n", 5000, "events per throughput burst (fan-out 10 delivers ten times as many)")
	flag.IntVar(&cfg.Concurrency, "c", 64, "dispatcher concurrency, endpoint max in-flight and ceiling workers")
	flag.IntVar(&cfg.PayloadBytes, "payload", 1024, "event body size in bytes")
	flag.IntVar(&cfg.Warmup, "warmup", 500, "unmeasured events before each throughput phase (at most n)")
	flag.DurationVar(&cfg.Paced, "paced", 10*time.Second, "length of each paced latency phase (0 skips them)")
	flag.IntVar(&cfg.IsoEndpoints, "iso-endpoints", 50, "healthy endpoints in the isolation run")
	flag.IntVar(&cfg.IsoEvents, "iso-events", 40, "events in each isolation run")
	flag.DurationVar(&cfg.SlowDelay, "slow", 10*time.Second, "answer delay of the slow endpoint")
	flag.IntVar(&cfg.Pending, "pending", 100000, "deliveries left pending retry in the memory run (0 skips it)")
	flag.BoolVar(&cfg.MemoryOnly, "memory-only", false, "run only the memory phase (-pending retries)")
	flag.DurationVar(&cfg.PendingTimeout, "pending-timeout", 10*time.Minute, "bound on the memory run")
	flag.DurationVar(&cfg.PhaseTimeout, "phase-timeout", 5*time.Minute, "bound on waiting for one phase's deliveries")
	flag.StringVar(&cfg.DispatcherPkg, "dispatcher-pkg", "github.com/hookyard/hookyard/services/dispatcher/cmd/dispatcher", "package of the dispatcher binary to build and measure")
	flag.DurationVar(&timeout, "timeout", 30*time.Minute, "abort the whole run after this long")
	flag.BoolVar(&cfg.Floors, "floors", true, "measure the floors: the floor consumer (consume, one signed POST per delivery, ack) at each fan-out, with delivered records in Redis and with the dispatcher's admission, and the POST /v1/messages floor, each in a burst and paced at the dispatcher's paced rate on its path")
	flag.StringVar(&floorQ, bench.FloorFlag, "", "")            // internal: run as the floor consumer of this queue
	flag.StringVar(&floorURLs, bench.FloorURLsFlag, "", "")     // internal: its endpoint URLs
	flag.StringVar(&floorRecord, bench.FloorRecordFlag, "", "") // internal: its delivered records' key prefix
	flag.StringVar(&floorHTTP, bench.FloorHTTPFlag, "", "")     // internal: its POST floor's address
	flag.BoolVar(&floorAdmit, bench.FloorAdmitFlag, false, "")  // internal: records through the dispatcher's admission
	flag.Usage = usage
	flag.Parse()
	cfg.Warmup = min(cfg.Warmup, cfg.N)

	// Ctrl-C and SIGTERM cancel the run; Run then stops its children and
	// removes what it created before returning.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if floorQ != "" {
		err := bench.ServeFloorConsumer(ctx, bench.FloorConsumerConfig{
			AMQPURL: cfg.AMQPURL, Queue: floorQ, Prefetch: cfg.Concurrency,
			URLs: strings.Split(floorURLs, ","), Secrets: strings.Split(os.Getenv(bench.FloorSecretsEnv), ","),
			RedisURL: cfg.RedisURL, RecordPrefix: floorRecord, Admit: floorAdmit,
			HTTPAddr: floorHTTP, APIKeys: os.Getenv(bench.FloorAPIKeyEnv),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "dispatcher-bench:", err)
			os.Exit(1)
		}
		return
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher-bench: locate own executable:", err)
		os.Exit(1)
	}
	cfg.Self = self

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep, err := bench.Run(ctx, cfg)
	rep.Print(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "\ndispatcher-bench: run failed:", err)
		os.Exit(1)
	}
}

// usage lists the flags except the internal floor consumer's.
func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprintf(out, "usage: %s [flags]\n", os.Args[0])
	flag.VisitAll(func(f *flag.Flag) {
		switch f.Name {
		case bench.FloorFlag, bench.FloorURLsFlag, bench.FloorRecordFlag, bench.FloorHTTPFlag, bench.FloorAdmitFlag:
			return
		}
		fmt.Fprintf(out, "  -%s\n    \t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
	})
}
