package message

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds the writes of one shared round trip.
const maxBatch = 128

// batcher lets writes that arrive together share one MULTI/EXEC: the
// first writer with none in flight sends its own at once; writers
// arriving while a round trip is out queue up and go together in the
// next one, sent as soon as that round trip returns. There is no timer: a
// lone write never waits, and under load the batch is whatever queued
// during one round trip. Each write's commands stay together in the
// transaction, so each is still all or nothing.
type batcher struct {
	mu      sync.Mutex
	queue   []*write
	running bool
}

type write struct {
	queue func(ctx context.Context, pipe redis.Pipeliner)
	err   error
	done  chan struct{}
}

// do runs queue's commands in a transaction, possibly shared with other
// writes, and returns once it has been sent and answered.
func (b *batcher) do(ctx context.Context, rdb redis.UniversalClient, queue func(ctx context.Context, pipe redis.Pipeliner)) error {
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
		// The write may still be made; the caller treats it as unknown.
		return ctx.Err()
	}
}

// flush sends what is queued, one round trip at a time, until the queue
// is empty. The writer that started it has its answer after the first
// round trip; any later ones are sent by a goroutine of their own, so no
// caller keeps serving others.
func (b *batcher) flush(ctx context.Context, rdb redis.UniversalClient) {
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	ws := b.queue[:n:n]
	b.queue = b.queue[n:]
	b.mu.Unlock()

	send(ctx, rdb, ws)

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

// send runs ws in one transaction and hands each write the first error of
// its own commands. A nil reply is an answer (an op's script found
// nothing), not a failure.
func send(ctx context.Context, rdb redis.UniversalClient, ws []*write) {
	pipe := rdb.TxPipeline()
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
