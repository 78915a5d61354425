// Package redisbatch lets Redis writes that arrive together share one
// round trip.
package redisbatch

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds the writes of one shared round trip.
const maxBatch = 128

// Batcher lets writes that arrive together share one round trip: the
// first writer with none in flight sends its own at once; writers
// arriving while a round trip is out queue up and go together in the
// next one, sent as soon as that round trip returns. There is no timer: a
// lone write never waits, and under load the batch is whatever queued
// during one round trip. With Tx the batch is one MULTI/EXEC, each
// write's commands staying together in it. The zero Batcher is ready to
// use.
type Batcher struct {
	// Tx sends each batch as a transaction.
	Tx bool

	mu      sync.Mutex
	queue   []*write
	running bool
}

type write struct {
	queue func(ctx context.Context, pipe redis.Pipeliner)
	err   error
	done  chan struct{}
}

// Do sends queue's commands, possibly together with other writes, and
// returns once they have been answered, with the first error among them
// (a nil reply is not one). The commands' results may be read after Do
// returns.
func (b *Batcher) Do(ctx context.Context, rdb redis.UniversalClient, queue func(ctx context.Context, pipe redis.Pipeliner)) error {
	w := &write{queue: queue, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, w)
	lead := !b.running
	b.running = true
	b.mu.Unlock()
	if lead {
		b.flush(context.WithoutCancel(ctx), rdb)
	}
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
	}
	// A write still queued is never sent; one already sent is waited
	// for (the client's timeouts bound it), so that its caller knows
	// whether it was made.
	b.mu.Lock()
	for i, q := range b.queue {
		if q == w {
			b.queue = append(b.queue[:i:i], b.queue[i+1:]...)
			b.mu.Unlock()
			return ctx.Err()
		}
	}
	b.mu.Unlock()
	<-w.done
	return w.err
}

// Len is the number of writes waiting for the round trip out.
func (b *Batcher) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// flush sends what is queued, one round trip at a time, until the queue
// is empty. The writer that started it has its answer after the first
// round trip; any later ones are sent by a goroutine of their own, so no
// caller keeps serving others.
func (b *Batcher) flush(ctx context.Context, rdb redis.UniversalClient) {
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	ws := b.queue[:n:n]
	b.queue = b.queue[n:]
	b.mu.Unlock()

	b.send(ctx, rdb, ws)

	b.mu.Lock()
	more := len(b.queue) > 0
	b.running = more
	if len(b.queue) == 0 {
		b.queue = nil
	}
	b.mu.Unlock()
	if more {
		go b.flush(ctx, rdb)
	}
}

// send runs ws in one pipeline and hands each write the first error of
// its own commands. A nil reply is an answer (a script found nothing),
// not a failure.
func (b *Batcher) send(ctx context.Context, rdb redis.UniversalClient, ws []*write) {
	pipe := rdb.Pipeline()
	if b.Tx {
		pipe = rdb.TxPipeline()
	}
	ends := make([]int, len(ws))
	for i, w := range ws {
		w.queue(ctx, pipe)
		ends[i] = pipe.Len()
	}
	cmds, err := pipe.Exec(ctx)
	start := 0
	for i, w := range ws {
		for _, c := range cmds[start:ends[i]] {
			if e := c.Err(); e != nil && !errors.Is(e, redis.Nil) {
				w.err = e
				break
			}
		}
		if w.err == nil && err != nil && !errors.Is(err, redis.Nil) && len(cmds) == 0 {
			w.err = err
		}
		start = ends[i]
		close(w.done)
	}
}
