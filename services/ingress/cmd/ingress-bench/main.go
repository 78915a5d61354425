// Command ingress-bench measures the ingress service end to end and against
// its ceilings in one run, and prints a table, ratios and the performance
// targets. It exits 0 when the run completed (whether or not the targets
// were met) and 1 when the run itself failed.
//
//	go run ./cmd/ingress-bench -n 20000 -c 64 -duration 10s
//
// It needs RabbitMQ and Redis on loopback (HOOKYARD_AMQP_URL and
// HOOKYARD_REDIS_URL override the defaults) and the go tool, which builds
// the ingress binary under test.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/ingress/internal/bench"
)

func main() {
	cfg := bench.Config{
		AMQPURL:  loadtest.Env("HOOKYARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
		RedisURL: loadtest.Env("HOOKYARD_REDIS_URL", "redis://127.0.0.1:6379/0"),
		Progress: os.Stderr,
	}
	var (
		warmup    int
		timeout   time.Duration
		sink      string
		floors    string
		floorAddr string
		floorMode string
		floorRun  string

		profilePhase string
	)
	flag.IntVar(&cfg.N, "n", 20000, "requests per closed-loop phase")
	flag.IntVar(&cfg.Concurrency, "c", 64, "concurrent closed-loop workers and raw publishers")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the fixed-rate phase")
	flag.IntVar(&warmup, "warmup", 1000, "unmeasured requests before each closed-loop phase (at most n)")
	flag.IntVar(&cfg.PublisherChannels, "publisher-channels", rabbit.DefaultPublisherChannels, "confirm channels, for ingress and the raw ceiling alike")
	flag.StringVar(&cfg.IngressPkg, "ingress-pkg", "github.com/hookyard/hookyard/services/ingress/cmd/ingress", "package of the ingress binary to build and measure")
	flag.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the ingress process during the saturation phase to this file ")
	flag.StringVar(&profilePhase, "cpuprofile-phase", "saturation", "phase -cpuprofile covers: saturation or fixed (the fixed-rate phase)")
	flag.DurationVar(&timeout, "timeout", 15*time.Minute, "abort the whole run after this long")
	flag.StringVar(&floors, "floors", "publish,headers,dedupe", "transport floors to measure, comma-separated (publish, headers, dedupe; empty for none)")
	flag.StringVar(&sink, bench.SinkFlag, "", "")           // internal: run as the bare HTTP sink on this address
	flag.StringVar(&floorAddr, bench.FloorFlag, "", "")     // internal: run as a floor server on this address
	flag.StringVar(&floorMode, bench.FloorModeFlag, "", "") // internal: which floor
	flag.StringVar(&floorRun, bench.FloorRunFlag, "", "")   // internal: the run it serves
	flag.Usage = usage
	flag.Parse()

	// Ctrl-C and SIGTERM cancel the run; Run then stops its children and
	// removes what it created before returning.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if sink != "" {
		if err := bench.Sink(ctx, sink); err != nil {
			fmt.Fprintln(os.Stderr, "ingress-bench:", err)
			os.Exit(1)
		}
		return
	}
	if floorAddr != "" {
		err := bench.ServeFloor(ctx, bench.FloorConfig{
			Addr: floorAddr, Mode: bench.FloorMode(floorMode), AMQPURL: cfg.AMQPURL, RedisURL: cfg.RedisURL,
			Channels: cfg.PublisherChannels, Run: floorRun,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "ingress-bench:", err)
			os.Exit(1)
		}
		return
	}

	var err error
	if cfg.Floors, err = bench.ParseFloors(floors); err != nil {
		fmt.Fprintln(os.Stderr, "ingress-bench:", err)
		os.Exit(2)
	}
	cfg.Warmup = min(warmup, cfg.N)
	switch profilePhase {
	case "saturation":
	case "fixed":
		cfg.ProfileFixed = true
	default:
		fmt.Fprintln(os.Stderr, "ingress-bench: -cpuprofile-phase: want saturation or fixed")
		os.Exit(2)
	}
	if cfg.CPUProfile != "" {
		abs, err := filepath.Abs(cfg.CPUProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ingress-bench: cpuprofile:", err)
			os.Exit(1)
		}
		cfg.CPUProfile = abs
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingress-bench: locate own executable:", err)
		os.Exit(1)
	}
	cfg.Self = self

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep, err := bench.Run(ctx, cfg)
	rep.Print(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "\ningress-bench: run failed:", err)
		os.Exit(1)
	}
}

// usage lists the flags except the internal sink flag.
func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprintf(out, "usage: %s [flags]\n", os.Args[0])
	flag.VisitAll(func(f *flag.Flag) {
		switch f.Name {
		case bench.SinkFlag, bench.FloorFlag, bench.FloorModeFlag, bench.FloorRunFlag:
			return
		}
		fmt.Fprintf(out, "  -%s\n    \t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
	})
}
