package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
)

// stampede sends o.stampede concurrent Gets of one cold key, alternating
// between the two replicas, at an origin that takes o.stampedeDelay, and
// fails unless the origin was loaded exactly once and every reader got the
// value.
func (e *env) stampede(ctx context.Context) error {
	o := e.o
	if err := e.createNamespace(ctx, &cachev1.Namespace{Name: "stampede", Strategy: "read_through", OriginUrl: e.origin.URL + "/slow/{key}"}); err != nil {
		return err
	}
	key := fmt.Sprintf("cold-%x", rand.Uint64())
	before := e.loads.Load()
	start := make(chan struct{})
	errs := make(chan error, o.stampede)
	var wg sync.WaitGroup
	for i := range o.stampede {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			en, err := e.replicas[i%len(e.replicas)].cli.Get(ctx, "stampede", key)
			if err == nil && !bytes.Equal(en.Value, e.value) {
				err = fmt.Errorf("reader got %d bytes, want the origin's %d", len(en.Value), len(e.value))
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	el := time.Since(t0)
	close(errs)
	loads := e.loads.Load() - before
	failed := len(errs)
	fmt.Printf("\nstampede: %d concurrent Gets of one cold key over %d replicas, %v origin\n", o.stampede, len(e.replicas), o.stampedeDelay)
	fmt.Printf("  origin loads %d (goal exactly 1), failed reads %d, all answered in %v\n", loads, failed, el.Round(time.Millisecond))
	var err error
	if loads != 1 {
		err = fmt.Errorf("stampede: origin loaded %d times, want 1", loads)
	}
	if failed > 0 {
		err = errors.Join(err, fmt.Errorf("stampede: %d of %d reads failed, first: %w", failed, o.stampede, <-errs))
	}
	return err
}
