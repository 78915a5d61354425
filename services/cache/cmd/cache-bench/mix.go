package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
)

const (
	mixSource = "bench"
	mixType   = "item.updated"
)

// mix runs o.n reads over o.conc goroutines and both replicas: a share
// o.mixMiss of them go to keys never read before (a miss to the origin),
// the rest to o.mixKeys hot keys, while events on the bus invalidate hot
// keys by the namespace's rule at o.mixEvents a second.
func (e *env) mix(ctx context.Context) error {
	o := e.o
	if err := e.createNamespace(ctx, &cachev1.Namespace{
		Name: "mix", Strategy: "read_through", OriginUrl: e.origin.URL + "/hot/{key}",
		InvalidationRules: []*cachev1.InvalidationRule{{EventType: mixSource + "." + mixType, Keys: []string{"item:{id}"}}},
	}); err != nil {
		return err
	}
	hot := func(i int) string { return fmt.Sprintf("item:%d", i) }
	if err := e.parallel(o.mixKeys, func(i int) error {
		_, err := e.replicas[i%len(e.replicas)].cli.Get(ctx, "mix", hot(i))
		return err
	}); err != nil {
		return fmt.Errorf("mix: warm hot keys: %w", err)
	}

	pctx, stopEvents := context.WithCancel(ctx)
	var published atomic.Int64
	var pubErr error
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		if o.mixEvents <= 0 {
			return
		}
		tick := time.NewTicker(time.Second / time.Duration(o.mixEvents))
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
			if err := e.publishUpdate(pctx, rand.N(o.mixKeys)); err != nil {
				if pctx.Err() == nil {
					pubErr = err
				}
				return
			}
			published.Add(1)
		}
	}()

	run := rand.Uint64()
	lat := make([]time.Duration, o.n)
	var hits, coldReads, hotMisses atomic.Int64
	t0 := time.Now()
	err := e.parallel(o.n, func(i int) error {
		r := e.replicas[i%len(e.replicas)].cli
		cold := rand.Float64() < o.mixMiss
		key := hot(rand.N(o.mixKeys))
		if cold {
			key = fmt.Sprintf("cold-%x-%d", run, i)
			coldReads.Add(1)
		}
		start := time.Now()
		en, err := r.Get(ctx, "mix", key)
		lat[i] = time.Since(start)
		switch {
		case err != nil:
			return err
		case en.Hit && cold:
			return fmt.Errorf("cold key %s was a hit", key)
		case en.Hit:
			hits.Add(1)
		case !cold:
			hotMisses.Add(1) // only an invalidation empties a warm key
		}
		return nil
	})
	el := time.Since(t0)
	stopEvents()
	pwg.Wait()
	if err != nil {
		return fmt.Errorf("mix: %w", err)
	}
	if pubErr != nil {
		return fmt.Errorf("mix: publish: %w", pubErr)
	}
	lag, err := e.eventLag(ctx)
	if err != nil {
		return fmt.Errorf("mix: %w", err)
	}
	rss, err := peakRSS()
	if err != nil {
		return err
	}
	slices.Sort(lat)
	fmt.Printf("\nread-heavy mix: %d reads over %d replicas by %d readers, %.0f%% to new keys (%v origin), %d hot keys, %d invalidation events/s\n",
		o.n, len(e.replicas), o.conc, o.mixMiss*100, o.originDelay, o.mixKeys, o.mixEvents)
	fmt.Printf("  %.0f reads/s, p50 %v, p99 %v, hits %.1f%% (%d reads of new keys, %d hot reads refilled after an event)\n",
		float64(o.n)/el.Seconds(), round(lat[o.n/2]), round(lat[o.n*99/100]), 100*float64(hits.Load())/float64(o.n), coldReads.Load(), hotMisses.Load())
	fmt.Printf("  events published %d; one event after the run invalidated its key in %v\n", published.Load(), lag.Round(time.Millisecond))
	fmt.Printf("  peak RSS of the whole process (2 replicas, clients, origin): %.0f MiB\n", rss)
	return nil
}

// publishUpdate publishes the event the mix namespace's rule matches for
// hot key i, to this run's own exchange.
func (e *env) publishUpdate(ctx context.Context, i int) error {
	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: fmt.Sprintf("evt-%x", rand.Uint64()), Source: mixSource, Type: mixType, Tenant: "bench",
		DataContentType: "application/json", Data: fmt.Appendf(nil, `{"id":"%d"}`, i),
	})
	if err != nil {
		return err
	}
	return e.pub.Publish(ctx, e.topo.Events, cloudevent.RoutingKey(mixSource, mixType), msg)
}

// eventLag publishes one event for a warm hot key and returns how long
// until a read of that key on the other replica misses: the event is
// consumed, the key deleted and the replicas' near copies dropped.
func (e *env) eventLag(ctx context.Context) (time.Duration, error) {
	r := e.replicas[1].cli
	if _, err := r.Get(ctx, "mix", "item:0"); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := e.publishUpdate(ctx, 0); err != nil {
		return 0, err
	}
	err := waitFor(ctx, "the event's invalidation", func() error {
		en, err := r.Get(ctx, "mix", "item:0")
		if err == nil && en.Hit {
			err = fmt.Errorf("item:0 still cached")
		}
		return err
	})
	return time.Since(t0), err
}

// parallel runs fn(0..n-1) over o.conc goroutines and returns the first
// error.
func (e *env) parallel(n int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, e.o.conc)
	for range e.o.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
