package dedupe

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisbatch"
)

// maxBatch bounds the scripts sent in one pipeline, so that one flush does
// not hold Redis (and the requests queued behind it) for long.
const maxBatch = 256

// linger is how long a script nobody waits for (a confirm sent after the
// answer) may wait for a script somebody waits for, to share its round
// trip. Until it reaches Redis another replica answers a replay of its id
// "in progress, retry" (409), never as new; this replica queues any
// later claim of the id behind it.
const linger = 2 * time.Millisecond

// batchTimeout bounds one pipelined round trip. Callers stop waiting when
// their own context ends; this only frees the flushing goroutine.
const batchTimeout = 10 * time.Second

// batcher sends the scripts of concurrent callers to Redis in shared
// pipelined round trips. A script somebody waits for is never delayed: one
// arriving while Redis is idle is sent at once, and the scripts that arrive
// while a round trip is in flight go together in the next one. A script
// nobody waits for (a confirm after the answer) waits up to linger for
// company. Under load this turns one round trip (and its syscalls and
// wake-ups) per script into one per batch; at a moderate rate a webhook's
// confirm rides with the next webhook's claim.
//
// Each script is atomic on its own key and Redis runs a pipeline's
// scripts in order, so batching changes no outcome: two claims of one id
// in a batch are a claim and an InProgress, as they would be one after the
// other. A failed round trip fails every script in it.
type batcher struct {
	rdb redis.UniversalClient

	mu        sync.Mutex
	queue     []*call
	running   bool // a flushing goroutine exists
	idle      bool // it waits for work (on wake), having found none
	lingering bool // a script nobody waits for is waiting for company
	sending   int  // calls in the round trip in flight
	wake      chan struct{}

	// started counts flushing goroutines started; tests read it.
	started int
}

// idleExit is how long the flushing goroutine waits for more work before
// it ends. Keeping it alive between round trips at a moderate rate saves
// starting a goroutine per webhook and growing its stack again through
// the Redis client's deep call chain every time (5% of the ingress CPU at
// a quarter of its saturation rate); an idle service still ends up with
// no goroutine and no timer.
const idleExit = time.Second

// call is one script run waiting for its batch.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	// done is closed when cmd is set, for a caller that waits; then, if
	// set, is called with cmd instead, on the flushing goroutine.
	done chan struct{}
	then func(*redis.Cmd)
}

// run queues a script and waits for its result, or for ctx.
func (b *batcher) run(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	return b.runAll(ctx, &call{script: s, keys: keys, args: args})[0]
}

// runAll queues calls together, so they go in one round trip (two only if
// they straddle the batch limit), and waits for their results, or for ctx.
func (b *batcher) runAll(ctx context.Context, calls ...*call) []*redis.Cmd {
	for _, c := range calls {
		c.done = make(chan struct{})
	}
	b.enqueue(calls...)
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		select {
		case <-c.done:
			cmds[i] = c.cmd
		case <-ctx.Done():
			// The script may still run; every script here is safe to
			// run after its caller left (a claim expires, the rest are
			// fenced).
			cmd := redis.NewCmd(ctx)
			cmd.SetErr(ctx.Err())
			cmds[i] = cmd
		}
	}
	return cmds
}

// send queues a script without waiting for it; then receives its result.
// Scripts run in the order they were queued, so a script queued later by
// any caller of this batcher runs after it.
func (b *batcher) send(s *redis.Script, keys []string, then func(*redis.Cmd), args ...any) {
	b.enqueue(&call{script: s, keys: keys, args: args, then: then})
}

// flushed waits until every script queued before it has been sent and
// answered, or ctx ends.
func (b *batcher) flushed(ctx context.Context) error {
	return b.runAll(ctx, &call{})[0].Err()
}

func (b *batcher) enqueue(calls ...*call) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queue = append(b.queue, calls...)
	if b.running && !b.idle {
		// The flushing goroutine takes them with its next round trip.
		return
	}
	if calls[0].done == nil {
		// Nobody waits for this script (a confirm after the answer):
		// it waits up to linger for company, usually the next claim,
		// instead of a round trip of its own.
		if !b.lingering {
			b.lingering = true
			time.AfterFunc(linger, b.endLinger)
		}
		return
	}
	b.startLocked()
}

// startLocked sets the flushing goroutine to work: wakes it if it is idle,
// starts one if there is none. b.mu is held.
func (b *batcher) startLocked() {
	if b.running {
		if b.idle {
			b.idle = false
			select {
			case b.wake <- struct{}{}:
			default:
			}
		}
		return
	}
	if b.wake == nil {
		b.wake = make(chan struct{}, 1)
	}
	b.running = true
	b.started++
	go b.flushLoop()
}

// endLinger sends what lingered, unless a round trip already took it.
func (b *batcher) endLinger() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lingering = false
	if len(b.queue) > 0 {
		b.startLocked()
	}
}

// flushLoop sends batches until the queue stays empty for idleExit.
func (b *batcher) flushLoop() {
	var idleTimer *time.Timer
	for {
		b.mu.Lock()
		if len(b.queue) > 0 && !b.idle {
			n := min(len(b.queue), maxBatch)
			batch := b.queue[:n:n]
			b.queue = b.queue[n:]
			b.sending = n
			b.mu.Unlock()
			b.flush(batch)
			b.mu.Lock()
			b.sending = 0
			b.mu.Unlock()
			continue
		}
		// Nothing to send, or only scripts lingering for company (their
		// timer or the next waited-for script wakes this goroutine).
		if len(b.queue) == 0 {
			b.queue = nil
		}
		b.idle = true
		b.mu.Unlock()
		if idleTimer == nil {
			idleTimer = time.NewTimer(idleExit)
		} else {
			idleTimer.Reset(idleExit)
		}
		select {
		case <-b.wake:
			idleTimer.Stop()
		case <-idleTimer.C:
			b.mu.Lock()
			if b.idle {
				// Nobody woke it: end, and let the next script start
				// a new one.
				b.idle, b.running = false, false
				b.mu.Unlock()
				return
			}
			// Woken as the timer fired; the wake token is taken by the
			// next idle wait at the latest.
			b.mu.Unlock()
		}
	}
}

// flush runs batch in one pipeline: EVALSHA for every script, then, only
// if Redis lost its script cache, EVAL for those it did not know
// (redisbatch.Reload).
func (b *batcher) flush(batch []*call) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	scripts := make([]*call, 0, len(batch))
	for _, c := range batch {
		if c.script != nil {
			scripts = append(scripts, c)
		} else {
			// A barrier (flushed): done once the scripts before it are.
			c.cmd = redis.NewCmd(ctx)
		}
	}
	if len(scripts) > 0 {
		cmds, _ := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range scripts {
				c.cmd = c.script.EvalSha(ctx, p, c.keys, c.args...)
			}
			return nil
		})
		redisbatch.Reload(ctx, b.rdb, cmds)
	}
	for _, c := range batch {
		if c.cmd == nil {
			c.cmd = redis.NewCmd(ctx)
			c.cmd.SetErr(fmt.Errorf("dedupe: script not sent"))
		}
		if c.then != nil {
			c.then(c.cmd)
		}
		if c.done != nil {
			close(c.done)
		}
	}
}
