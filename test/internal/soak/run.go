// Package soak sends Stripe webhooks through the real suite at a fixed
// rate for a long time (an hour by default) and samples, every interval,
// what a leak would make grow: each service's goroutines, heap, RSS and
// open file descriptors, Redis memory and the broker's queues.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/test/internal/faults"
	"github.com/hookyard/hookyard/test/internal/sink"
	"github.com/hookyard/hookyard/test/internal/suite"
)

// Config says how long, how fast and how often to sample.
type Config struct {
	Duration    time.Duration
	Rate        int           // webhooks per second
	Sample      time.Duration // sample interval
	Concurrency int           // senders; a webhook due while all are busy is missed
	// Retention is the services' event-id, delivery-record and task-result
	// retention, and the source's dedupe window. Kept well under Duration
	// so that Redis reaches its steady state (keys expiring as fast as
	// they are written) within the first quarter of the run; with the
	// defaults (2h, and 72h for a Stripe source) it would grow all hour.
	Retention time.Duration
	Drain     time.Duration // how long delivery may take after the last send
	// TaskEvery makes every n-th webhook an invoice.paid, which the jobs
	// trigger turns into a task (the others are invoice.created, delivered
	// only): jobs runs tens of tasks a second on this kind of machine, so
	// one task per webhook would measure only its backlog.
	TaskEvery int
	Out       io.Writer
}

// Report holds the figures of a run.
type Report struct {
	Rows                       []Row
	Verdicts                   []Verdict
	Due, Missed, Failed        int
	Acknowledged, Delivered    int
	Duplicated, Lost           int
	SendTime, DrainTime        time.Duration
	Partial                    bool  // sending was stopped before Duration
	KeysLeft                   int64 // in Redis after the clean-up
	SubscriberRefused          int64
	LastSendError, LastRefused string
}

// Run performs one soak. Cancelling ctx stops the sending early; the run
// then drains, judges what it sampled and cleans up as usual, marked
// partial.
func Run(ctx context.Context, cfg Config) (rep Report, err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Out, format+"\n", args...) }
	// Everything after the sending must still run when ctx is cancelled.
	bg := context.WithoutCancel(ctx)
	dir, err := os.MkdirTemp("", "hookyard-soak-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	// A Redis of its own, so that used_memory is the suite's alone.
	rdbProc, err := faults.StartRedis(bg, dir)
	if err != nil {
		return rep, err
	}
	defer rdbProc.Stop()
	opt, _ := redis.ParseURL(rdbProc.URL())
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	sub, err := sink.Start()
	if err != nil {
		return rep, err
	}
	defer sub.Close()
	sub.CountOnly()

	id := suite.NewID()
	key := "key-" + suite.RandHex(16)
	ret := cfg.Retention.String()
	logf("building and starting the four services (retention %s)", ret)
	st, err := suite.Start(bg, dir, suite.Options{
		ID: id, Keys: map[string]string{"t" + id: key}, RedisURL: rdbProc.URL(), Logf: logf,
		Env: map[string]string{
			"HOOKYARD_EVENT_ID_RETENTION":   ret,
			"HOOKYARD_DISPATCHER_RETENTION": ret,
			"HOOKYARD_JOBS_RESULT_TTL":      ret,
		},
	})
	if err != nil {
		return rep, err
	}
	defer func() {
		st.Close() // deletes the vhost and the run's keys
		rep.KeysLeft, _ = rdb.DBSize(context.Background()).Result()
	}()
	source, err := setUp(bg, st, sub, id, key, cfg.Retention)
	if err != nil {
		return rep, err
	}
	secret := source.secret

	// Open-loop sending: webhook i is due at start + i/rate whatever the
	// answers; a due webhook no sender is free for is counted as missed
	// rather than sent late, so the rate stays honest.
	total := int(cfg.Duration.Seconds()*float64(cfg.Rate)) + 1
	ackedIDs := make([]bool, total)
	var (
		acked, failed, missed, due atomic.Int64
		sending                    atomic.Bool
		latMu                      sync.Mutex
		lats                       []time.Duration
		lastErr                    atomic.Value
	)
	work := make(chan int, max(cfg.Rate/10, 1))
	var senders sync.WaitGroup
	for range cfg.Concurrency {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for i := range work {
				typ := "invoice.created"
				if i%cfg.TaskEvery == 0 {
					typ = "invoice.paid"
				}
				body := fmt.Appendf(nil, `{"id":"evt_%s_%d","object":"event","type":%q,"data":{"object":{"id":"in_%d","customer":%q,"amount_paid":4200}}}`, id, i, typ, i, source.customer)
				t0 := time.Now()
				code, b, err := st.Ingress().PostStripe(bg, source.name, secret, body)
				d := time.Since(t0)
				if err != nil || code/100 != 2 {
					failed.Add(1)
					lastErr.Store(fmt.Sprintf("%d %v %.200s", code, err, b))
					continue
				}
				ackedIDs[i] = true
				acked.Add(1)
				latMu.Lock()
				lats = append(lats, d)
				latMu.Unlock()
			}
		}()
	}

	start := time.Now()
	sending.Store(true)
	stopSampling := make(chan struct{})
	samplingDone := make(chan struct{})
	go func() {
		defer close(samplingDone)
		logf("%s", Header(suite.Names))
		var prevDue, prevMissed, prevAcked, prevFailed int64
		tick := time.NewTicker(cfg.Sample)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			latMu.Lock()
			l := lats
			lats = nil
			latMu.Unlock()
			slices.Sort(l)
			r := Row{At: time.Since(start).Round(time.Second), Sending: sending.Load(), P50: loadtest.Percentile(l, 0.5), P99: loadtest.Percentile(l, 0.99)}
			d, m, a, f := due.Load(), missed.Load(), acked.Load(), failed.Load()
			r.Due, r.Missed, r.Acked, r.Failed = int(d-prevDue), int(m-prevMissed), int(a-prevAcked), int(f-prevFailed)
			prevDue, prevMissed, prevAcked, prevFailed = d, m, a, f
			r.AckedTotal = int(a)
			r.Delivered, _ = sub.Accepted()
			sample(bg, &r, st, rdb)
			rep.Rows = append(rep.Rows, r)
			logf("%s", r.Line(suite.Names))
		}
	}()

	pace := time.NewTicker(5 * time.Millisecond)
	issued := 0
	end := start.Add(cfg.Duration)
send:
	for {
		select {
		case <-ctx.Done():
			rep.Partial = true
			break send
		case now := <-pace.C:
			if !now.Before(end) {
				break send
			}
			target := min(int(now.Sub(start).Seconds()*float64(cfg.Rate)), total)
			for ; issued < target; issued++ {
				due.Add(1)
				select {
				case work <- issued:
				default:
					missed.Add(1)
				}
			}
		}
	}
	pace.Stop()
	sending.Store(false)
	close(work)
	senders.Wait()
	rep.SendTime = time.Since(start)
	rep.Due, rep.Missed, rep.Failed, rep.Acknowledged = int(due.Load()), int(missed.Load()), int(failed.Load()), int(acked.Load())
	rep.LastSendError, _ = lastErr.Load().(string)
	logf("sent for %v: due %d, missed %d, failed %d, acknowledged %d (%.0f/s); draining",
		rep.SendTime.Round(time.Second), rep.Due, rep.Missed, rep.Failed, rep.Acknowledged, loadtest.Rate(rep.Acknowledged, rep.SendTime))

	drainStart := time.Now()
	_ = suite.Eventually(bg, cfg.Drain, func() error {
		if n, _ := sub.Accepted(); n < rep.Acknowledged {
			time.Sleep(2 * time.Second)
			return fmt.Errorf("%d of %d delivered", n, rep.Acknowledged)
		}
		return nil
	})
	rep.DrainTime = time.Since(drainStart)
	close(stopSampling)
	<-samplingDone

	rep.Delivered, rep.Duplicated = sub.Accepted()
	for i, ok := range ackedIDs {
		if ok && !sub.Has(fmt.Sprintf("evt_%s_%d", id, i)) {
			rep.Lost++
		}
	}
	_, _, rep.SubscriberRefused, rep.LastRefused = sub.Stats()
	for _, s := range SeriesOf(Judged(rep.Rows), suite.Names) {
		rep.Verdicts = append(rep.Verdicts, Judge(s))
	}
	var unhealthy error
	for _, name := range suite.Names {
		if err := st.Services[name].Healthy(bg); err != nil {
			unhealthy = errors.Join(unhealthy, err)
		}
	}
	return rep, unhealthy
}

// source is what setUp created.
type source struct{ name, secret, customer string }

// setUp creates the whole flow the flow test runs: a Stripe source, an
// endpoint on the dispatcher for its events, a cached customer and a jobs
// trigger whose http task invalidates that customer on every paid
// invoice. The source remembers event ids for retention, not Stripe's
// default 72 h, or its dedupe keys would grow all run long.
func setUp(ctx context.Context, st *suite.Stack, sub *sink.Sink, id, key string, retention time.Duration) (source, error) {
	src := source{name: "stripe-" + id, secret: "whsec_" + suite.RandHex(16), customer: "cus_" + suite.RandHex(6)}
	if err := st.Ingress().JSON(ctx, "POST", "/v1/sources", key, map[string]any{
		"name": src.name, "provider": "stripe", "secrets": []string{src.secret},
		"dedupeWindow": fmt.Sprintf("%ds", int(retention.Seconds())),
	}, 200, nil); err != nil {
		return src, err
	}
	var ep struct{ ID, Secret string }
	if err := st.Dispatcher().JSON(ctx, "POST", "/v1/endpoints", key, map[string]any{"url": sub.URL("/hooks"), "eventTypes": []string{src.name + ".#"}, "maxInFlight": 64}, 200, &ep); err != nil {
		return src, err
	}
	if err := sub.SetSecret("/hooks", ep.Secret); err != nil {
		return src, err
	}
	cache := st.Cache()
	if err := cache.JSON(ctx, "POST", "/v1/namespaces", key, map[string]any{"name": "customers", "strategy": "cache_aside"}, 200, nil); err != nil {
		return src, err
	}
	if err := cache.JSON(ctx, "PUT", "/v1/namespaces/customers/keys/"+url.PathEscape(src.customer), key, map[string]any{"value": "e30=", "ttl": "3600s"}, 200, nil); err != nil {
		return src, err
	}
	err := st.Jobs().JSON(ctx, "POST", "/v1/triggers", key, map[string]any{
		"eventType": src.name + ".invoice.paid",
		"task": map[string]any{
			"name": "http",
			"args": map[string]any{
				"url":     cache.URL("/v1/namespaces/customers:invalidate"),
				"method":  "POST",
				"headers": map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json"},
				"body":    fmt.Sprintf(`{"keys":[%q]}`, src.customer),
			},
			"maxRetries": 5,
		},
	}, 200, nil)
	return src, err
}

// sample reads each service's /metrics, Redis's used_memory and the
// vhost's queue depth into r. A figure that cannot be read stays 0 (the
// queue depth -1).
func sample(ctx context.Context, r *Row, st *suite.Stack, rdb *redis.Client) {
	r.Procs = map[string]Proc{}
	for _, name := range suite.Names {
		m, err := loadtest.ScrapeMetrics(ctx, st.Services[name].URL("/metrics"))
		if err != nil {
			continue
		}
		r.Procs[name] = Proc{
			Goroutines: m["go_goroutines"],
			HeapInuse:  m["go_memstats_heap_inuse_bytes"],
			RSS:        m["process_resident_memory_bytes"],
			FDs:        m["process_open_fds"],
		}
	}
	r.RedisUsed = redisUsedMemory(ctx, rdb)
	r.Queued = suite.QueueDepth(ctx, st.ID)
}

// redisUsedMemory is used_memory from INFO memory, 0 if unreadable.
func redisUsedMemory(ctx context.Context, rdb *redis.Client) float64 {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return 0
}
