package writebehind

import (
	"context"
	"strconv"
	"time"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/internal/namespace"
)

// A pending write is recorded in Redis before its message is published; if
// the publish fails (the caller gets an error, but the cache already shows
// the value) or a message is lost some other way, no consumer would ever
// write it. The sweeper finds such writes and queues them again. It runs on
// every replica; a Redis lock lets one of them sweep per period.

func (q *Queue) namespacesKey() string { return q.Prefix + ":wbns" }
func (q *Queue) sweepLockKey() string  { return q.Prefix + ":wbsweep" }

// RunSweeper sweeps every SweepEvery until ctx ends.
func (q *Queue) RunSweeper(ctx context.Context) error {
	t := time.NewTicker(q.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		ok, err := q.Rdb.SetNX(ctx, q.sweepLockKey(), "1", q.SweepEvery*9/10).Result()
		if err != nil || !ok {
			continue
		}
		if _, err := q.Sweep(ctx); err != nil && ctx.Err() == nil {
			q.Log.WarnContext(ctx, "write-behind sweep failed", "err", err)
		}
	}
}

// Sweep queues again every pending write whose message is overdue by
// SweepGrace, and returns how many writes are pending in all.
func (q *Queue) Sweep(ctx context.Context) (int64, error) {
	ids, err := q.Rdb.ZRange(ctx, q.namespacesKey(), 0, -1).Result()
	if err != nil {
		return 0, err
	}
	var total int64
	now := time.Now()
	for _, id := range ids {
		n := q.Entries.NS(id)
		keys, err := q.Rdb.ZRange(ctx, backlogKey(n), 0, 999).Result()
		if err != nil {
			return total, err
		}
		if len(keys) == 0 {
			q.Rdb.ZRem(ctx, q.namespacesKey(), id)
			continue
		}
		count, err := q.Rdb.ZCard(ctx, backlogKey(n)).Result()
		if err != nil {
			return total, err
		}
		total += count
		for _, key := range keys {
			vals, err := q.Rdb.HMGet(ctx, pendingKey(n, key), "t", "ns", "q", "at").Result()
			if err != nil {
				return total, err
			}
			tenant, _ := vals[0].(string)
			name, _ := vals[1].(string)
			if tenant == "" {
				if exists, _ := q.Rdb.Exists(ctx, pendingKey(n, key)).Result(); exists == 0 {
					q.Rdb.ZRem(ctx, backlogKey(n), key)
				}
				continue
			}
			last := millis(vals[2])
			if last == 0 {
				last = millis(vals[3])
			}
			if now.Sub(time.UnixMilli(last)) < q.SweepGrace {
				continue
			}
			rec := &namespace.Record{Tenant: tenant, ID: id, NS: &cachev1.Namespace{Name: name}}
			if err := q.publish(ctx, rec, key, time.Time{}); err != nil {
				return total, err
			}
			q.Metrics.WriteBehind.WithLabelValues("requeued").Inc()
		}
	}
	q.Metrics.Backlog.Set(float64(total))
	return total, nil
}

func millis(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
