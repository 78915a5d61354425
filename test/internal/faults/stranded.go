package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/test/internal/suite"
)

// maxDescribed bounds how many stranded tasks are described one by one.
const maxDescribed = 20

// describeTasks logs, for each event whose task did not end, what the jobs
// API answers and the raw records the jobs service keeps in Redis (the
// task hash, its attempt log, its entries in the lease, schedule, outbox
// and parked sets; key layout in services/jobs/internal/store), then the
// jobs service's broker queues, so that a stranded task can be told apart
// from a slow one after the cluster is gone.
func describeTasks(ctx context.Context, cl *cluster, st *suite.Stack, redisURL, id, tenant, key, trigger string, evts []string, logf func(string, ...any)) {
	logf("---- %d tasks not ended ----", len(evts))
	rdb, err := redisconn.Open(redisURL)
	if err != nil {
		logf("open redis: %v", err)
		rdb = nil
	} else {
		defer rdb.Close()
	}
	prefix := "{" + id + ":jobs}"
	now := time.Now()
	if rdb != nil {
		describeSets(ctx, rdb, prefix, now, logf)
	}
	for i, evt := range evts {
		if i == maxDescribed {
			logf("(%d more not described)", len(evts)-maxDescribed)
			break
		}
		task := trigger + "-" + evt
		code, body, err := st.Jobs().Do(ctx, "GET", "/v1/tasks/"+url.PathEscape(task), key, nil)
		logf("task %s\n  api: %d %s %v", task, code, strings.TrimSpace(string(body)), errOrEmpty(err))
		if rdb != nil {
			describeRecords(ctx, rdb, prefix, tenant, task, now, logf)
		}
	}
	describeQueues(ctx, cl, logf)
	logf("---- end of tasks not ended ----")
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// describeSets logs the sizes of the shared sorted sets and how many of
// their entries are due.
func describeSets(ctx context.Context, rdb redis.UniversalClient, prefix string, now time.Time, logf func(string, ...any)) {
	nowMS := strconv.FormatInt(now.UnixMilli(), 10)
	for _, set := range []string{"leases", "sched", "outbox", "callbacks"} {
		k := prefix + ":" + set
		total, err := rdb.ZCard(ctx, k).Result()
		if err != nil {
			logf("redis %s: %v", k, err)
			continue
		}
		due, _ := rdb.ZCount(ctx, k, "-inf", nowMS).Result()
		logf("redis %s: %d entries, %d due", k, total, due)
	}
}

// describeRecords logs the Redis records of one task.
func describeRecords(ctx context.Context, rdb redis.UniversalClient, prefix, tenant, id string, now time.Time, logf func(string, ...any)) {
	h, err := rdb.HGetAll(ctx, prefix+":t:"+tenant+":"+id).Result()
	if err != nil {
		logf("  hash: %v", err)
	} else {
		delete(h, "spec") // the args and limits, also in the API answer
		for _, f := range []string{"created", "started", "finished", "lease", "hard", "due"} {
			if v, err := strconv.ParseInt(h[f], 10, 64); err == nil && v > 0 {
				h[f] += " (" + at(v, now) + ")"
			}
		}
		b, _ := json.Marshal(h)
		logf("  hash: %s", b)
	}
	if ttl, err := rdb.PTTL(ctx, prefix+":t:"+tenant+":"+id).Result(); err == nil {
		logf("  hash ttl: %v", ttl)
	}
	if l, err := rdb.LRange(ctx, prefix+":a:"+tenant+":"+id, 0, -1).Result(); err != nil {
		logf("  attempts: %v", err)
	} else {
		logf("  attempts: [%s]", strings.Join(l, ", "))
	}
	mem := tenant + "|" + id
	if s, err := rdb.ZScore(ctx, prefix+":leases", mem).Result(); err == nil {
		logf("  lease entry: %s", at(int64(s), now))
	} else {
		logf("  lease entry: none (%v)", err)
	}
	for _, set := range []string{"sched", "outbox", "callbacks"} {
		logf("  %s entries: %s", set, scanMembers(ctx, rdb, prefix+":"+set, mem+"|*", now))
	}
	if q := h["queue"]; q != "" {
		logf("  parked entries: %s", scanMembers(ctx, rdb, prefix+":parked:"+tenant+":"+q, mem+"|*", now))
	}
}

// scanMembers lists the members of zset k matching pattern with their
// scores as times.
func scanMembers(ctx context.Context, rdb redis.UniversalClient, k, pattern string, now time.Time) string {
	var out []string
	iter := rdb.ZScan(ctx, k, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		m := iter.Val()
		if !iter.Next(ctx) {
			break
		}
		score, _ := strconv.ParseFloat(iter.Val(), 64)
		out = append(out, m+" @ "+at(int64(score), now))
	}
	if err := iter.Err(); err != nil {
		return err.Error()
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// at formats Unix milliseconds relative to now.
func at(v int64, now time.Time) string {
	d := time.UnixMilli(v).Sub(now).Round(time.Millisecond)
	if d < 0 {
		return fmt.Sprintf("%v ago", -d)
	}
	return fmt.Sprintf("in %v", d)
}

// describeQueues logs the jobs service's broker queues with their ready
// and unacknowledged messages.
func describeQueues(ctx context.Context, cl *cluster, logf func(string, ...any)) {
	qs, err := cl.queues(ctx)
	if err != nil {
		logf("broker queues: %v", err)
		return
	}
	for _, q := range qs {
		if strings.Contains(q.Name, "jobs") {
			logf("queue %s: %d ready, %d unacknowledged", q.Name, q.Ready, q.Unacked)
		}
	}
}

// watchBreakers polls the dispatcher's metrics every second until ctx
// ends and records each change of an endpoint's circuit breaker state
// (hookyard_dispatcher_breaker_state: 0 closed, 1 half-open, 2 open),
// with the time since start, so that an opening can be set against the
// faults. done returns the changes once polling has stopped.
func watchBreakers(ctx context.Context, st *suite.Stack, start time.Time, logf func(string, ...any)) (done func() []string) {
	var changes []string
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		last := map[string]string{}
		names := map[string]string{"0": "closed", "1": "half-open", "2": "open"}
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			code, body, err := st.Dispatcher().Do(ctx, "GET", "/metrics", "", nil)
			if err != nil || code != 200 {
				continue
			}
			for _, line := range strings.Split(string(body), "\n") {
				rest, ok := strings.CutPrefix(line, "hookyard_dispatcher_breaker_state{")
				if !ok {
					continue
				}
				labels, v, ok := strings.Cut(rest, "} ")
				if !ok || last[labels] == v {
					continue
				}
				if last[labels] != "" || v != "0" {
					c := fmt.Sprintf("+%v breaker %s %s", time.Since(start).Round(time.Second), names[v], labels)
					logf("%s", c)
					changes = append(changes, c)
				}
				last[labels] = v
			}
		}
	}()
	return func() []string {
		<-stopped
		return changes
	}
}

// deferrals returns the dispatcher's deferral counters by reason.
func deferrals(ctx context.Context, st *suite.Stack) string {
	code, body, err := st.Dispatcher().Do(ctx, "GET", "/metrics", "", nil)
	if err != nil || code != 200 {
		return fmt.Sprintf("unreadable (%d %v)", code, err)
	}
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, "hookyard_dispatcher_deferrals_total{reason=\""); ok {
			out = append(out, strings.Replace(rest, "\"} ", " ", 1))
		}
	}
	return strings.Join(out, ", ")
}
