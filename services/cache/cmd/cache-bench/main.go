// Command cache-bench measures the cache against real Redis in one run and
// prints the figures side by side: a hit over gRPC against a raw go-redis
// GET of the same value, a near-cache hit in the Go client, and a
// read-through miss in front of a slow origin.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/services/cache/client"
	"github.com/hookyard/hookyard/services/cache/internal/cache"
)

func main() {
	n := flag.Int("n", 5000, "reads per hit measurement")
	misses := flag.Int("misses", 200, "read-through misses")
	conc := flag.Int("c", 16, "concurrent readers for throughput")
	originDelay := flag.Duration("origin-delay", 20*time.Millisecond, "origin latency")
	size := flag.Int("size", 100, "value bytes")
	flag.Parse()
	if err := run(*n, *misses, *conc, *originDelay, *size); err != nil {
		log.Fatal(err)
	}
}

type result struct {
	name       string
	p50, p99   time.Duration
	throughput float64
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
	close(errs)
	if err := <-errs; err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	return result{name: name, p50: lat[n/2], p99: lat[n*99/100], throughput: float64(n) / el.Seconds()}, nil
}

// round keeps sub-microsecond figures (near-cache hits) readable.
func round(d time.Duration) time.Duration {
	if d < 10*time.Microsecond {
		return d
	}
	return d.Round(time.Microsecond)
}

func run(n, misses, conc int, originDelay time.Duration, size int) error {
	ctx := context.Background()
	redisURL := os.Getenv("HOOKYARD_REDIS_URL")
	if redisURL == "" {
		redisURL = "redis://127.0.0.1:6379/0"
	}
	rdb, err := redisconn.Open(redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	prefix := fmt.Sprintf("hookyard:bench:cache:%x", rand.Uint64())
	defer func() {
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	}()

	value := make([]byte, size)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(originDelay)
		_, _ = w.Write(value)
	}))
	defer origin.Close()

	svc, err := cache.New(cache.Config{KeyPrefix: prefix}, cache.Deps{Redis: rdb, AllowCIDRs: "127.0.0.0/8"})
	if err != nil {
		return err
	}
	defer svc.Close()
	keys, _ := auth.ParseKeys("bench:bench-key-0001")
	srv := server.New(server.Options{Name: "cache", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Keys: keys, Log: slog.New(slog.DiscardHandler)})
	svc.Register(srv)
	if err := srv.Listen(); err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = srv.Run(sctx) }()
	go func() { _ = svc.Near.Run(sctx) }()

	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(client.Credentials("bench-key-0001")))
	if err != nil {
		return err
	}
	defer conn.Close()
	plain := client.New(conn, client.Options{})
	nearC := client.New(conn, client.Options{Near: &client.NearOptions{Redis: rdb, Channel: prefix + ":near", TTL: time.Minute}})
	go func() { _ = nearC.Run(sctx) }()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := nearC.WaitReady(wctx); err != nil {
		return err
	}
	// The server answers once Run has started.
	for {
		_, err := plain.API().CreateNamespace(wctx, &cachev1.CreateNamespaceRequest{Namespace: &cachev1.Namespace{
			Name: "bench", Strategy: "read_through", OriginUrl: origin.URL + "/{key}", Ttl: durationpb.New(time.Hour),
		}})
		if err == nil {
			break
		}
		if wctx.Err() != nil {
			return fmt.Errorf("create namespace: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := plain.Get(ctx, "bench", "hot"); err != nil {
		return err
	}
	rawKey := prefix + ":raw"
	if err := rdb.Set(ctx, rawKey, value, time.Hour).Err(); err != nil {
		return err
	}

	var rs []result
	add := func(r result, err error) error {
		if err == nil {
			rs = append(rs, r)
		}
		return err
	}
	if err := add(measure("raw go-redis GET", n, conc, func(int) error { return rdb.Get(ctx, rawKey).Err() })); err != nil {
		return err
	}
	if err := add(measure("cache hit (gRPC GetKey)", n, conc, func(int) error {
		e, err := plain.Get(ctx, "bench", "hot")
		if err == nil && !e.Hit {
			err = fmt.Errorf("not a hit")
		}
		return err
	})); err != nil {
		return err
	}
	if err := add(measure("near-cache hit (Go client)", n, conc, func(int) error {
		e, err := nearC.Get(ctx, "bench", "hot")
		if err == nil && !e.Near {
			_, err = nearC.Get(ctx, "bench", "hot") // the first read fills the copy
		}
		return err
	})); err != nil {
		return err
	}
	run := rand.Uint64()
	if err := add(measure(fmt.Sprintf("read-through miss (%v origin)", originDelay), misses, conc, func(i int) error {
		e, err := plain.Get(ctx, "bench", fmt.Sprintf("miss-%x-%d-%d", run, i, time.Now().UnixNano()))
		if err == nil && e.Hit {
			err = fmt.Errorf("a miss was a hit")
		}
		return err
	})); err != nil {
		return err
	}

	fmt.Printf("cache benchmark: %d-byte value, %d reads per hit row (%d misses), throughput with %d concurrent readers\n\n", size, n, misses, conc)
	fmt.Printf("%-34s %12s %12s %14s\n", "", "p50", "p99", "reads/s")
	for _, r := range rs {
		fmt.Printf("%-34s %12v %12v %14.0f\n", r.name, round(r.p50), round(r.p99), r.throughput)
	}
	raw, hit, nearHit := rs[0], rs[1], rs[2]
	fmt.Printf("\ncache hit vs raw GET:      p50 %.2fx (goal <= 1.5x), throughput %.2fx (goal >= 0.67x)\n",
		float64(hit.p50)/float64(raw.p50), hit.throughput/raw.throughput)
	fmt.Printf("near-cache hit vs raw GET: %.0fx faster at p50 (goal >= 20x)\n", float64(raw.p50)/float64(max(nearHit.p50, time.Nanosecond)))
	return nil
}
