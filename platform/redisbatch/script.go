package redisbatch

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// sources maps the digest of every script made by NewScript to its
// source, so that a batch can send again, in full, a script that Redis
// answered NOSCRIPT.
var sources sync.Map

// NewScript returns a script that a batch may send by digest alone
// (EVALSHA, a few dozen bytes where EVAL sends it whole on every call):
// a batch whose EVALSHA finds the script missing (a restart, SCRIPT
// FLUSH, a failover to a replica that never loaded it) sends that command
// again with EVAL before it answers.
func NewScript(src string) *redis.Script {
	s := redis.NewScript(src)
	sources.Store(s.Hash(), src)
	return s
}

// Reload is what a batch does after its pipeline came back, for callers
// that send their own pipelines: every EVALSHA of cmds (of a script made
// by NewScript) that Redis answered NOSCRIPT is sent again with EVAL, and
// its answer given to the original command.
func Reload(ctx context.Context, rdb redis.UniversalClient, cmds []redis.Cmder) {
	reload(ctx, rdb, false, cmds)
}

// reload sends again, with EVAL, every EVALSHA of cmds that Redis
// answered NOSCRIPT, and gives its answer to the original command. A
// NOSCRIPT command did nothing, so sending it again cannot repeat a
// write. In a transaction the others' writes were made in the first
// EXEC: the write lands whole, in two steps (see Batcher.Tx).
func reload(ctx context.Context, rdb redis.UniversalClient, tx bool, cmds []redis.Cmder) {
	var lost []*redis.Cmd
	for _, c := range cmds {
		if c, ok := c.(*redis.Cmd); ok && c.Err() != nil && c.Name() == "evalsha" && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			lost = append(lost, c)
		}
	}
	if len(lost) == 0 {
		return
	}
	pipe := rdb.Pipeline()
	if tx {
		pipe = rdb.TxPipeline()
	}
	again := make([]*redis.Cmd, len(lost))
	for i, c := range lost {
		args := c.Args()
		src, ok := sources.Load(args[1])
		if !ok {
			continue // not ours to send: its NOSCRIPT stands
		}
		eval := append([]any{"eval", src}, args[2:]...)
		again[i] = pipe.Do(ctx, eval...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range lost {
		if again[i] != nil {
			c.SetVal(again[i].Val())
			c.SetErr(again[i].Err())
		}
	}
}
