package redistest

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// RoundTrips is a go-redis hook that counts what a client sends: a single
// command or a pipeline (or transaction) is one round trip each. Tests
// use it to pin how many round trips an operation costs.
type RoundTrips struct{ singles, pipelines atomic.Int64 }

// N is the round trips so far.
func (r *RoundTrips) N() int64 { return r.singles.Load() + r.pipelines.Load() }

// Singles is the single commands so far.
func (r *RoundTrips) Singles() int64 { return r.singles.Load() }

// Pipelines is the pipelines and transactions so far.
func (r *RoundTrips) Pipelines() int64 { return r.pipelines.Load() }

// DialHook passes through.
func (r *RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook counts a single command.
func (r *RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.singles.Add(1)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook counts a pipeline.
func (r *RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.pipelines.Add(1)
		return next(ctx, cmds)
	}
}
