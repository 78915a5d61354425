package redistest

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// NoScriptOnce is a go-redis hook that answers the first pipeline of
// EVALSHA commands with NOSCRIPT, as Redis does after losing its script
// cache (a restart, SCRIPT FLUSH), so a test can check the caller loads
// its scripts again. Hit reports whether it has answered.
type NoScriptOnce struct{ hit atomic.Bool }

// Hit reports whether the hook has answered a pipeline with NOSCRIPT.
func (n *NoScriptOnce) Hit() bool { return n.hit.Load() }

// DialHook passes through.
func (n *NoScriptOnce) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook passes through: only pipelines are answered.
func (n *NoScriptOnce) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

// ProcessPipelineHook answers the first EVALSHA pipeline with NOSCRIPT.
func (n *NoScriptOnce) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || cmds[0].Name() != "evalsha" || n.hit.Swap(true) {
			return next(ctx, cmds)
		}
		err := replyError("NOSCRIPT No matching script. Please use EVAL.")
		for _, c := range cmds {
			c.SetErr(err)
		}
		return err
	}
}

// replyError is an error reply of the server (go-redis's redis.Error).
type replyError string

func (e replyError) Error() string { return string(e) }
func (e replyError) RedisError()   {}
