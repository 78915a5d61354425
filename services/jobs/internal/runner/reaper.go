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
	// FailoverCheck is how often the Redis primary's replication id is
	// read (default 2s); when it changes, notes in flight are published
	// again (store.Resync), at once and ResyncAgain later (default 10s),
	// for writes that reached the old primary after the promotion.
	FailoverCheck, ResyncAgain time.Duration
}

// Run reaps until ctx ends.
func (r *Reaper) Run(ctx context.Context) error {
	if r.Interval <= 0 {
		r.Interval = 100 * time.Millisecond
	}
	if r.FailoverCheck <= 0 {
		r.FailoverCheck = 2 * time.Second
	}
	if r.ResyncAgain <= 0 {
		r.ResyncAgain = 10 * time.Second
	}
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	janitor := time.NewTicker(time.Minute)
	defer janitor.Stop()
	failover := time.NewTicker(r.FailoverCheck)
	defer failover.Stop()
	var primary, again string
	var againC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-failover.C:
			id, err := r.Store.Primary(ctx)
			if err != nil || id == "" {
				continue
			}
			if primary != "" && id != primary {
				r.Log.WarnContext(ctx, "redis failover: publishing the notes in flight again", "replication_id", id)
				r.resync(ctx, id+":1")
				again, againC = id+":2", time.After(r.ResyncAgain)
			}
			primary = id
			continue
		case <-againC:
			r.resync(ctx, again)
			againC = nil
			continue
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

// resync makes the notes in flight due again, once per key across replicas.
func (r *Reaper) resync(ctx context.Context, key string) {
	n, err := r.Store.Resync(ctx, key)
	if err != nil {
		r.Log.WarnContext(ctx, "resync after a redis failover", "err", err)
		return
	}
	if n > 0 {
		r.Log.InfoContext(ctx, "resync after a redis failover", "notes", n)
	}
}
