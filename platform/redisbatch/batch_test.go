package redisbatch

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/platform/testwait"
)

// holdFirst holds the first pipeline until released.
type holdFirst struct {
	release chan struct{}
	n       atomic.Int32
}

func (h *holdFirst) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *holdFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *holdFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "incr" && h.n.Add(1) == 1 {
			<-h.release
		}
		return next(ctx, cmds)
	}
}

// A write whose caller gives up while it waits for the round trip out is
// never sent.
func TestCancelledQueuedWriteIsNotSent(t *testing.T) {
	rdb, prefix := redistest.New(t, "redisbatch")
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	h := &holdFirst{release: make(chan struct{})}
	rdb.AddHook(h)
	var b Batcher
	first := make(chan error, 1)
	go func() {
		first <- b.Do(ctx, rdb, func(ctx context.Context, p redis.Pipeliner) { p.Incr(ctx, prefix+":a") })
	}()
	testwait.Eventually(t, 10*time.Second, "first round trip out", func() bool { return h.n.Load() == 1 })
	cctx, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() {
		second <- b.Do(cctx, rdb, func(ctx context.Context, p redis.Pipeliner) { p.Incr(ctx, prefix+":b") })
	}()
	testwait.Eventually(t, 10*time.Second, "second write queued", func() bool { return b.Len() == 1 })
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled write: %v", err)
	}
	close(h.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 10*time.Second, "batcher idle", func() bool { return b.Len() == 0 })
	if n, err := rdb.Exists(ctx, prefix+":b").Result(); err != nil || n != 0 {
		t.Fatalf("cancelled write was sent (exists %d, %v)", n, err)
	}
}

// holdIncr holds the first pipeline that holds an INCR until released.
type holdIncr struct {
	release chan struct{}
	n       atomic.Int32
}

func (h *holdIncr) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *holdIncr) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *holdIncr) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "incr" && h.n.Add(1) == 1 {
				<-h.release
				break
			}
		}
		return next(ctx, cmds)
	}
}

// In a transaction, a command Redis refuses while queueing (an unknown
// command here; OOM or READONLY in production) discards the whole EXEC:
// the other writes of the batch were not made and must not be told they
// were. (go-redis sets EXECABORT on every command; this guards it.)
func TestDiscardedTransactionFailsEveryWrite(t *testing.T) {
	rdb, prefix := redistest.New(t, "redisbatch")
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	h := &holdIncr{release: make(chan struct{})}
	rdb.AddHook(h)
	b := Batcher{Tx: true}
	first := make(chan error, 1)
	go func() {
		first <- b.Do(ctx, rdb, func(ctx context.Context, p redis.Pipeliner) { p.Incr(ctx, prefix+":a") })
	}()
	testwait.Eventually(t, 10*time.Second, "first round trip out", func() bool { return h.n.Load() == 1 })
	good, bad := make(chan error, 1), make(chan error, 1)
	go func() {
		good <- b.Do(ctx, rdb, func(ctx context.Context, p redis.Pipeliner) { p.Set(ctx, prefix+":b", "v", 0) })
	}()
	testwait.Eventually(t, 10*time.Second, "good write queued", func() bool { return b.Len() == 1 })
	go func() {
		bad <- b.Do(ctx, rdb, func(ctx context.Context, p redis.Pipeliner) { p.Do(ctx, "hookyardnosuchcommand") })
	}()
	testwait.Eventually(t, 10*time.Second, "bad write queued", func() bool { return b.Len() == 2 })
	close(h.release)
	if err := <-first; err != nil {
		t.Fatalf("first write: %v", err)
	}
	if err := <-bad; err == nil {
		t.Fatal("the refused command's write reported success")
	}
	made := rdb.Exists(ctx, prefix+":b").Val() == 1
	if err := <-good; err == nil && !made {
		t.Fatal("a write discarded with the transaction reported success")
	}
}

// counted adds ARGV[1] to KEYS[1] and returns the new value.
var counted = NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)

// Scripts go by digest; after Redis has lost them (SCRIPT FLUSH here; a
// restart or a failover to a replica that never loaded them), every write
// of a batch still lands, once, and its callers read the scripts' answers.
func TestBatchLoadsScriptsFlushedMidRun(t *testing.T) {
	rdb := redistest.Private(t)
	ctx := context.Background()
	for _, tx := range []bool{false, true} {
		b := Batcher{Tx: tx}
		key := fmt.Sprintf("flushed:%v", tx)
		for i := range 40 {
			if i%10 == 5 {
				if err := rdb.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			var got *redis.Cmd
			err := b.Do(ctx, rdb, func(ctx context.Context, p redis.Pipeliner) {
				p.Incr(ctx, key+":plain")
				got = counted.EvalSha(ctx, p, []string{key}, 1)
			})
			if err != nil {
				t.Fatalf("tx %v, write %d: %v", tx, i, err)
			}
			if n, err := got.Int(); err != nil || n != i+1 {
				t.Fatalf("tx %v, write %d: script answered %d, %v; want %d", tx, i, n, err, i+1)
			}
		}
		if n, _ := rdb.Get(ctx, key+":plain").Int(); n != 40 {
			t.Fatalf("tx %v: the plain command ran %d times, want 40", tx, n)
		}
	}
}
