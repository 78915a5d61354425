package runner

import (
	"context"
	"log/slog"
	"time"

	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// Reaper ends attempts whose lease ran out: the hard time limit passed or
// the worker stopped heartbeating. This is what makes the hard limit hold
// whatever the worker does; the fencing token then refuses the worker's
// late outcome. Every replica runs one; the end script lets exactly one
// of them end a given attempt.
type Reaper struct {
	Store    *store.Store
	Hub      *Hub
	Log      *slog.Logger
	Interval time.Duration // default 100ms
	Ended    func(tenant, id, state string)
}

// Run reaps until ctx ends.
func (r *Reaper) Run(ctx context.Context) error {
	if r.Interval <= 0 {
		r.Interval = 100 * time.Millisecond
	}
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	janitor := time.NewTicker(time.Minute)
	defer janitor.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-janitor.C:
			// One replica per five minutes drops index entries of expired tasks.
			if r.Store.Janitor(ctx, 5*time.Minute-time.Second) {
				if n, err := r.Store.Prune(ctx); err != nil {
					r.Log.WarnContext(ctx, "prune task index", "err", err)
				} else if n > 0 {
					r.Log.InfoContext(ctx, "pruned task index", "removed", n)
				}
			}
			continue
		case <-t.C:
		}
		due, err := r.Store.Expired(ctx, 256)
		if err != nil {
			if ctx.Err() == nil {
				r.Log.WarnContext(ctx, "reaper", "err", err)
			}
			continue
		}
		for _, d := range due {
			st, changed, err := r.Store.Expire(ctx, d[0], d[1])
			if err != nil {
				r.Log.WarnContext(ctx, "expire lease", "task_id", d[1], "err", err)
				continue
			}
			if changed {
				r.Log.InfoContext(ctx, "lease expired", "task_id", d[1], "state", st)
				r.Hub.Ended(d[0], d[1])
				if r.Ended != nil {
					r.Ended(d[0], d[1], st)
				}
			}
		}
	}
}
