// Package burst sends a burst of Stripe webhooks through the real suite as
// fast as the machine allows and watches the backlog rise and drain: ingress
// latency, queue depths, deliveries and the memory of every service.
package burst

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/test/internal/faults"
	"github.com/hookyard/hookyard/test/internal/sink"
	"github.com/hookyard/hookyard/test/internal/suite"
)

// Config says how big a burst.
type Config struct {
	N           int
	Concurrency int
	Drain       time.Duration
	Out         io.Writer
}

// Report holds the figures of a run.
type Report struct {
	N, Acknowledged, Delivered, Duplicated int
	SendTime, DrainTime                    time.Duration
	P50, P99, Max                          time.Duration
	PeakBacklog, PeakQueued                int
	PeakRSS, EndRSS                        map[string]int64
	Timeline                               []string
}

// Run performs one burst.
func Run(ctx context.Context, cfg Config) (rep Report, err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Out, format+"\n", args...) }
	dir, err := os.MkdirTemp("", "hookyard-burst-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	// A Redis of its own: the burst leaves tens of thousands of keys.
	rdb, err := faults.StartRedis(ctx, dir)
	if err != nil {
		return rep, err
	}
	defer rdb.Stop()

	sub, err := sink.Start()
	if err != nil {
		return rep, err
	}
	defer sub.Close()
	id := suite.NewID()
	key := "key-" + suite.RandHex(16)
	logf("building and starting the four services")
	st, err := suite.Start(ctx, dir, suite.Options{ID: id, Keys: map[string]string{"t" + id: key}, RedisURL: rdb.URL(), Logf: logf})
	if err != nil {
		return rep, err
	}
	defer st.Close()
	vhost := id

	source, secret := "stripe-"+id, "whsec_"+suite.RandHex(16)
	if err := st.Ingress().JSON(ctx, "POST", "/v1/sources", key, map[string]any{"name": source, "provider": "stripe", "secrets": []string{secret}}, 200, nil); err != nil {
		return rep, err
	}
	var ep struct{ ID, Secret string }
	if err := st.Dispatcher().JSON(ctx, "POST", "/v1/endpoints", key, map[string]any{"url": sub.URL("/hooks"), "eventTypes": []string{source + ".#"}, "maxInFlight": 64}, 200, &ep); err != nil {
		return rep, err
	}
	if err := sub.SetSecret("/hooks", ep.Secret); err != nil {
		return rep, err
	}

	var acked atomic.Int64
	rep.PeakRSS, rep.EndRSS = map[string]int64{}, map[string]int64{}
	sampleDone := make(chan struct{})
	stopSample := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(sampleDone)
		for {
			select {
			case <-stopSample:
				return
			case <-time.After(5 * time.Second):
			}
			queued := suite.QueueDepth(ctx, vhost)
			delivered := len(sub.Counts())
			backlog := int(acked.Load()) - delivered
			rep.PeakBacklog = max(rep.PeakBacklog, backlog)
			rep.PeakQueued = max(rep.PeakQueued, queued)
			var rss []string
			for _, name := range suite.Names {
				_, cur, err := st.Services[name].Memory()
				if err == nil {
					rss = append(rss, fmt.Sprintf("%s %dMiB", name, cur>>20))
				}
			}
			line := fmt.Sprintf("t=%4ds acknowledged %6d delivered %6d backlog %6d queued %6d  RSS %s",
				int(time.Since(start).Seconds()), acked.Load(), delivered, backlog, queued, strings.Join(rss, ", "))
			logf("%s", line)
			rep.Timeline = append(rep.Timeline, line)
		}
	}()

	lat := make([][]time.Duration, cfg.Concurrency)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				body := []byte(fmt.Sprintf(`{"id":"evt_%s_%d","object":"event","type":"invoice.paid","data":{"object":{"id":"in_%d","amount_paid":4200}}}`, id, i, i))
				t0 := time.Now()
				code, _, err := st.Ingress().PostStripe(ctx, source, secret, body)
				if err == nil && code/100 == 2 {
					lat[w] = append(lat[w], time.Since(t0))
					acked.Add(1)
				}
			}
		}()
	}
	for i := range cfg.N {
		select {
		case next <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	rep.SendTime = time.Since(start)
	rep.N, rep.Acknowledged = cfg.N, int(acked.Load())
	all := slices.Concat(lat...)
	slices.Sort(all)
	rep.P50, rep.P99, rep.Max = loadtest.Percentile(all, 0.5), loadtest.Percentile(all, 0.99), loadtest.Percentile(all, 1)
	logf("sent %d in %v (%.0f/s): p50 %v p99 %v; draining", cfg.N, rep.SendTime.Round(time.Second), loadtest.Rate(rep.Acknowledged, rep.SendTime), rep.P50, rep.P99)

	drainStart := time.Now()
	_ = suite.Eventually(ctx, cfg.Drain, func() error {
		if n := len(sub.Counts()); n < rep.Acknowledged {
			time.Sleep(2 * time.Second)
			return fmt.Errorf("%d of %d delivered", n, rep.Acknowledged)
		}
		return nil
	})
	rep.DrainTime = time.Since(drainStart)
	// One more sample shows the queues empty again.
	time.Sleep(6 * time.Second)
	close(stopSample)
	<-sampleDone
	for _, n := range sub.Counts() {
		rep.Delivered++
		rep.Duplicated += n - 1
	}
	for _, name := range suite.Names {
		peak, cur, err := st.Services[name].Memory()
		if err == nil {
			rep.PeakRSS[name], rep.EndRSS[name] = peak, cur
		}
	}
	for _, s := range st.Services {
		if err := s.Healthy(ctx); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// Print writes the report.
func (r Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "webhooks\t%d (acknowledged %d)\n", r.N, r.Acknowledged)
	fmt.Fprintf(tw, "send time\t%v (%.0f/s)\n", r.SendTime.Round(time.Second), loadtest.Rate(r.Acknowledged, r.SendTime))
	fmt.Fprintf(tw, "ingress latency\tp50 %v  p99 %v  max %v\n", r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Millisecond))
	fmt.Fprintf(tw, "peak backlog\t%d acknowledged, not yet delivered; %d messages queued\n", r.PeakBacklog, r.PeakQueued)
	fmt.Fprintf(tw, "drain after the last send\t%v\n", r.DrainTime.Round(time.Second))
	fmt.Fprintf(tw, "delivered\t%d (duplicates %d, lost %d)\n", r.Delivered, r.Duplicated, r.Acknowledged-r.Delivered)
	for _, name := range suite.Names {
		fmt.Fprintf(tw, "RSS %s\tpeak %d MiB, end %d MiB\n", name, r.PeakRSS[name]>>20, r.EndRSS[name]>>20)
	}
	tw.Flush()
}
