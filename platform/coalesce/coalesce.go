// Package coalesce lets calls that arrive together share one send: one
// Redis round trip, one RPC carrying many items.
package coalesce

import (
	"context"
	"errors"
	"sync"
)

// DefaultMax bounds the items of one send when Batcher.Max is zero.
const DefaultMax = 128

// Batcher lets items that arrive together share one send: the first
// caller with no send in flight sends its own item at once; items
// arriving while a send is out queue up and go together in the next one,
// sent as soon as that send returns. There is no timer: a lone item never
// waits, and under load the batch is whatever queued during one send. The
// zero Batcher is ready to use.
type Batcher[T any] struct {
	// Max bounds the items of one send; default DefaultMax.
	Max int

	mu      sync.Mutex
	queue   []*call[T]
	running bool
	// calls keeps answered calls for the next Do: two allocations fewer
	// per item.
	calls sync.Pool
}

// Send sends items together and returns each item's error at its index,
// or nil when all succeeded. Items past the end of a shorter slice fail
// with ErrNoAnswer.
type Send[T any] func(ctx context.Context, items []T) []error

// ErrNoAnswer is the error of an item its send returned no answer for.
var ErrNoAnswer = errors.New("coalesce: the send returned no answer for this item")

type call[T any] struct {
	item T
	err  error
	done chan struct{} // buffered: flush signals once, Do receives
}

// release returns c's error and keeps c for another Do.
func (b *Batcher[T]) release(c *call[T]) error {
	err := c.err
	var zero T
	c.item, c.err = zero, nil
	b.calls.Put(c)
	return err
}

// Do sends item, possibly together with others, and returns its own
// error once the send carrying it has returned. The batch goes out
// through the send of the caller that finds none in flight (with its
// context, without its cancellation), so every caller of one Batcher
// must pass an equivalent send. A caller whose ctx ends while its item
// still waits is answered ctx.Err() and the item is never sent; an item
// already sent is waited for, so its caller knows whether it was made.
func (b *Batcher[T]) Do(ctx context.Context, item T, send Send[T]) error {
	c, _ := b.calls.Get().(*call[T])
	if c == nil {
		c = &call[T]{done: make(chan struct{}, 1)}
	}
	c.item = item
	b.mu.Lock()
	b.queue = append(b.queue, c)
	lead := !b.running
	b.running = true
	b.mu.Unlock()
	if lead {
		b.flush(context.WithoutCancel(ctx), send)
	}
	select {
	case <-c.done:
		return b.release(c)
	case <-ctx.Done():
	}
	b.mu.Lock()
	for i, q := range b.queue {
		if q == c {
			b.queue = append(b.queue[:i:i], b.queue[i+1:]...)
			b.mu.Unlock()
			_ = b.release(c) // never sent: never signalled
			return ctx.Err()
		}
	}
	b.mu.Unlock()
	<-c.done
	return b.release(c)
}

// Len is the number of items waiting for the send out.
func (b *Batcher[T]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// flush sends what is queued, one send at a time, until the queue is
// empty. The caller that started it has its answer after the first send;
// any later ones are sent by a goroutine of their own, so no caller keeps
// serving others.
func (b *Batcher[T]) flush(ctx context.Context, send Send[T]) {
	max := b.Max
	if max <= 0 {
		max = DefaultMax
	}
	b.mu.Lock()
	n := min(len(b.queue), max)
	cs := b.queue[:n:n]
	b.queue = b.queue[n:]
	b.mu.Unlock()

	items := make([]T, len(cs))
	for i, c := range cs {
		items[i] = c.item
	}
	errs := send(ctx, items)
	for i, c := range cs {
		switch {
		case errs == nil:
		case i < len(errs):
			c.err = errs[i]
		default:
			c.err = ErrNoAnswer
		}
		c.done <- struct{}{} // c is its caller's again from here
	}

	b.mu.Lock()
	more := len(b.queue) > 0
	b.running = more
	if !more {
		b.queue = nil
	}
	b.mu.Unlock()
	if more {
		go b.flush(ctx, send)
	}
}
