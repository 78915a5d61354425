// Package redisbatch lets Redis writes that arrive together share one
// round trip.
package redisbatch

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/coalesce"
)

// Batcher lets writes that arrive together share one round trip (a
// coalesce.Batcher: no timer, a lone write never waits, under load the
// batch is whatever queued during one round trip). With Tx the batch is
// one MULTI/EXEC, each write's commands staying together in it. The zero
// Batcher is ready to use.
//
// Scripts made with NewScript may be sent by digest (EVALSHA): the ones
// Redis answers NOSCRIPT are sent again in full before Do returns. In a
// transaction that second send is a second MULTI/EXEC: the write still
// lands whole, but not in one step; between the two the rest of the
// write is visible without the scripts that were missing.
type Batcher struct {
	// Tx sends each batch as a transaction.
	Tx bool

	b coalesce.Batcher[func(ctx context.Context, pipe redis.Pipeliner)]
}

// Do sends queue's commands, possibly together with other writes, and
// returns once they have been answered, with the first error among them
// (a nil reply is not one). The commands' results may be read after Do
// returns. A write whose ctx ends while it waits is never sent.
func (b *Batcher) Do(ctx context.Context, rdb redis.UniversalClient, queue func(ctx context.Context, pipe redis.Pipeliner)) error {
	return b.b.Do(ctx, queue, func(ctx context.Context, ws []func(context.Context, redis.Pipeliner)) []error {
		return b.send(ctx, rdb, ws)
	})
}

// Len is the number of writes waiting for the round trip out.
func (b *Batcher) Len() int { return b.b.Len() }

// send runs ws in one pipeline and hands each write the first error of
// its own commands. A nil reply is an answer (a script found nothing),
// not a failure.
func (b *Batcher) send(ctx context.Context, rdb redis.UniversalClient, ws []func(context.Context, redis.Pipeliner)) []error {
	pipe := rdb.Pipeline()
	if b.Tx {
		pipe = rdb.TxPipeline()
	}
	ends := make([]int, len(ws))
	for i, w := range ws {
		w(ctx, pipe)
		ends[i] = pipe.Len()
	}
	cmds, err := pipe.Exec(ctx)
	reload(ctx, rdb, b.Tx, cmds)
	errs := make([]error, len(ws))
	start := 0
	for i := range ws {
		for _, c := range cmds[start:ends[i]] {
			if e := c.Err(); e != nil && !errors.Is(e, redis.Nil) {
				errs[i] = e
				break
			}
		}
		if errs[i] == nil && err != nil && !errors.Is(err, redis.Nil) && len(cmds) == 0 {
			errs[i] = err
		}
		start = ends[i]
	}
	return errs
}
