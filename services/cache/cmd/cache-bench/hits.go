package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/client"
)

type result struct {
	name       string
	p50, p99   time.Duration
	throughput float64
	// cpu is the process's CPU time (user and system, every goroutine:
	// client, server and go-redis) per read in the concurrent run. On a
	// shared host it is steadier than wall time, which depends on how
	// much of the machine other work leaves.
	cpu time.Duration
	// allocs is heap allocations per read in the concurrent run (the
	// whole process, like cpu); unlike time, it does not depend on load.
	allocs float64
}

// mallocs is how many heap objects this process allocated so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// cpuTime is the CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs op n times one after another for latency, then n times
// over conc goroutines for throughput.
func measure(name string, n, conc int, op func(i int) error) (result, error) {
	lat := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		if err := op(i); err != nil {
			return result{}, fmt.Errorf("%s: %w", name, err)
		}
		lat[i] = time.Since(start)
	}
	slices.Sort(lat)
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	m0 := mallocs()
	cpu0 := cpuTime()
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += conc {
				if err := op(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	allocs := float64(mallocs()-m0) / float64(n)
	close(errs)
	if err := <-errs; err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	return result{name: name, p50: lat[n/2], p99: lat[n*99/100], throughput: float64(n) / el.Seconds(), cpu: cpu / time.Duration(n), allocs: allocs}, nil
}

// startProfile starts a CPU profile to path (none if path is empty) and
// returns the function that ends it.
func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeAllocs writes the allocations made so far (the hit row's, with
// -memprofile) to path and stops recording them.
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = pprof.Lookup("allocs").WriteTo(f, 0)
	runtime.MemProfileRate = 0
	return err
}

// round keeps sub-microsecond figures (near-cache hits) readable.
func round(d time.Duration) time.Duration {
	if d < 10*time.Microsecond {
		return d
	}
	return d.Round(time.Microsecond)
}

// hits measures a hit over gRPC, a near-cache hit and a read-through miss
// on the first replica against a raw GET of the same value.
func (e *env) hits(ctx context.Context) error {
	o := e.o
	if err := e.createNamespace(ctx, &cachev1.Namespace{Name: "bench", Strategy: "read_through", OriginUrl: e.origin.URL + "/hot/{key}"}); err != nil {
		return err
	}
	plain := e.replicas[0].cli
	nearC := client.New(e.replicas[0].cc, client.Options{Near: &client.NearOptions{Redis: e.rdb, Channel: e.prefix + ":near", TTL: time.Minute}})
	nctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = nearC.Run(nctx) }()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := nearC.WaitReady(wctx); err != nil {
		return err
	}
	if _, err := plain.Get(ctx, "bench", "hot"); err != nil {
		return err
	}
	rawKey := e.prefix + ":raw"
	if err := e.rdb.Set(ctx, rawKey, e.value, time.Hour).Err(); err != nil {
		return err
	}

	var rs []result
	add := func(r result, err error) error {
		if err == nil {
			rs = append(rs, r)
		}
		return err
	}
	if err := add(measure("raw go-redis GET", o.n, o.conc, func(int) error { return e.rdb.Get(ctx, rawKey).Err() })); err != nil {
		return err
	}
	// The cache's own read path, without gRPC: namespace lookup (cached
	// per replica, as GetKey does) and the read script in Redis.
	svc := e.replicas[0].svc
	if err := add(measure("cache read path, no gRPC (fill.Reader.Get)", o.n, o.conc, func(int) error {
		rec, err := svc.Namespaces.Lookup(ctx, "bench", "bench")
		if err != nil {
			return err
		}
		res, err := svc.Reader.Get(ctx, rec, "hot")
		if err == nil && !res.Hit {
			err = fmt.Errorf("not a hit")
		}
		return err
	})); err != nil {
		return err
	}
	var floors []result
	for _, f := range e.floors {
		r, err := e.measureFloor(ctx, f)
		if err != nil {
			return err
		}
		floors = append(floors, r)
	}
	stopProfile, err := startProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	if o.memProfile != "" {
		runtime.MemProfileRate = 1 // every allocation of the hit row
	}
	err = add(measure("cache hit (gRPC GetKey)", o.n, o.conc, func(int) error {
		en, err := plain.Get(ctx, "bench", "hot")
		if err == nil && !en.Hit {
			err = fmt.Errorf("not a hit")
		}
		return err
	}))
	stopProfile()
	if err != nil {
		return err
	}
	if o.memProfile != "" {
		if err := writeAllocs(o.memProfile); err != nil {
			return err
		}
	}
	if err := add(measure("near-cache hit (Go client)", o.n, o.conc, func(int) error {
		en, err := nearC.Get(ctx, "bench", "hot")
		if err == nil && !en.Near {
			_, err = nearC.Get(ctx, "bench", "hot") // the first read fills the copy
		}
		return err
	})); err != nil {
		return err
	}
	run := rand.Uint64()
	if err := add(measure(fmt.Sprintf("read-through miss (%v origin)", o.originDelay), o.misses, o.conc, func(i int) error {
		en, err := plain.Get(ctx, "bench", fmt.Sprintf("miss-%x-%d-%d", run, i, time.Now().UnixNano()))
		if err == nil && en.Hit {
			err = fmt.Errorf("a miss was a hit")
		}
		return err
	})); err != nil {
		return err
	}

	fmt.Printf("cache benchmark: %d-byte value, %d reads per hit row (%d misses), throughput with %d concurrent readers\n\n", o.size, o.n, o.misses, o.conc)
	fmt.Printf("%-60s %10s %10s %10s %10s %8s\n", "", "p50", "p99", "reads/s", "CPU/read", "allocs")
	row := func(r result) {
		fmt.Printf("%-60s %10v %10v %10.0f %10v %8.1f\n", r.name, round(r.p50), round(r.p99), r.throughput, r.cpu.Round(100*time.Nanosecond), r.allocs)
	}
	for i, r := range rs {
		row(r)
		if i == 1 {
			for _, f := range floors {
				row(f)
			}
		}
	}
	raw, path, hit, nearHit := rs[0], rs[1], rs[2], rs[3]
	bare, own := floors[0], floors[len(floors)-1]
	fmt.Printf("\nwhere a hit's CPU goes (per read, whole process): gRPC transport %v (bare no-op), server interceptors and options %v (no-op on the cache's server less bare), cache %v (hit less no-op on its server; its read path alone %v)\n",
		bare.cpu.Round(100*time.Nanosecond), (own.cpu - bare.cpu).Round(100*time.Nanosecond), (hit.cpu - own.cpu).Round(100*time.Nanosecond), path.cpu.Round(100*time.Nanosecond))
	fmt.Printf("transport floor vs raw GET: bare no-op p50 %.2fx, throughput %.2fx; no-op on the cache's server p50 %.2fx, throughput %.2fx\n",
		float64(bare.p50)/float64(raw.p50), bare.throughput/raw.throughput, float64(own.p50)/float64(raw.p50), own.throughput/raw.throughput)
	fmt.Printf("\ncache hit vs raw GET:      p50 %.2fx (goal <= 1.5x), throughput %.2fx (goal >= 0.67x)\n",
		float64(hit.p50)/float64(raw.p50), hit.throughput/raw.throughput)
	fmt.Printf("CPU per read (this process; Redis's own not counted): cache hit %.1fx a raw GET\n", float64(hit.cpu)/float64(max(raw.cpu, 1)))
	fmt.Printf("near-cache hit vs raw GET: %.0fx faster at p50 (goal >= 20x)\n", float64(raw.p50)/float64(max(nearHit.p50, time.Nanosecond)))
	return nil
}
