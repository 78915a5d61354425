package coalesce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/testwait"
)

// recorder is a Send that records each batch and can hold the first one.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
	hold    chan struct{} // the first send waits for it when set
	out     chan struct{} // closed when the first send is out
	answer  func(items []int) []error
}

func (r *recorder) send(_ context.Context, items []int) []error {
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(items))
	first := len(r.batches) == 1
	r.mu.Unlock()
	if first && r.hold != nil {
		close(r.out)
		<-r.hold
	}
	if r.answer != nil {
		return r.answer(items)
	}
	return nil
}

func (r *recorder) got() [][]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batches)
}

// Items that arrive while a send is out go together in the next one,
// each with its own answer; a lone item goes at once.
func TestItemsQueuedDuringASendShareTheNext(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), out: make(chan struct{}), answer: func(items []int) []error {
		errs := make([]error, len(items))
		for i, it := range items {
			if it%2 == 1 {
				errs[i] = fmt.Errorf("odd %d", it)
			}
		}
		return errs
	}}
	var b Batcher[int]
	ctx := context.Background()
	errs := make([]chan error, 6)
	for i := range errs {
		errs[i] = make(chan error, 1)
	}
	go func() { errs[0] <- b.Do(ctx, 0, r.send) }()
	<-r.out
	for i := 1; i < len(errs); i++ {
		go func() { errs[i] <- b.Do(ctx, i, r.send) }()
	}
	testwait.Eventually(t, 10*time.Second, "five items queued", func() bool { return b.Len() == 5 })
	close(r.hold)
	for i, c := range errs {
		err := <-c
		if (i%2 == 1) != (err != nil) {
			t.Errorf("item %d: %v", i, err)
		}
	}
	got := r.got()
	if len(got) != 2 || len(got[0]) != 1 || len(got[1]) != 5 {
		t.Fatalf("batches %v, want [[0] [five items]]", got)
	}
}

// A batch never holds more than Max items; the rest go in the next send.
func TestMaxBoundsABatch(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), out: make(chan struct{})}
	b := Batcher[int]{Max: 3}
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() { _ = b.Do(ctx, 0, r.send) })
	<-r.out
	for i := 1; i <= 7; i++ {
		wg.Go(func() { _ = b.Do(ctx, i, r.send) })
	}
	testwait.Eventually(t, 10*time.Second, "seven items queued", func() bool { return b.Len() == 7 })
	close(r.hold)
	wg.Wait()
	var sizes []int
	for _, g := range r.got() {
		sizes = append(sizes, len(g))
	}
	if !slices.Equal(sizes, []int{1, 3, 3, 1}) {
		t.Fatalf("batch sizes %v, want [1 3 3 1]", sizes)
	}
}

// An item whose caller gives up while it waits is never sent.
func TestCancelledQueuedItemIsNotSent(t *testing.T) {
	r := &recorder{hold: make(chan struct{}), out: make(chan struct{})}
	var b Batcher[int]
	first := make(chan error, 1)
	go func() { first <- b.Do(context.Background(), 1, r.send) }()
	<-r.out
	cctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() { second <- b.Do(cctx, 2, r.send) }()
	testwait.Eventually(t, 10*time.Second, "second item queued", func() bool { return b.Len() == 1 })
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled item: %v", err)
	}
	close(r.hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if got := r.got(); len(got) != 1 {
		t.Fatalf("batches %v, want only the first", got)
	}
}

// Items a send returned no answer for fail; they are not taken as sent.
func TestShortAnswerFailsTheRest(t *testing.T) {
	var b Batcher[int]
	err := b.Do(context.Background(), 1, func(context.Context, []int) []error { return []error{} })
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("got %v, want ErrNoAnswer", err)
	}
}
