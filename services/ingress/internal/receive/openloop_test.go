package receive

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	rtmetrics "runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkReceiveOpenLoop sends webhooks at a fixed rate (500/s, as in the
// ingress benchmark's quarter-saturation phase on a quiet host), each from
// its scheduled time, and splits the tail: the whole request, the shared
// Redis round trips, and the time goroutines of this process waited to run
// (runtime/metrics /sched/latencies). What is neither is mostly the broker's
// confirm. b.N is the number of webhooks.
func BenchmarkReceiveOpenLoop(b *testing.B) {
	const rate = 500
	h := newHarness(b, "")
	trips := &tripTimes{}
	h.rdb.AddHook(trips)
	pad := bytes.Repeat([]byte("x"), 900)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	send := func(i int) (time.Duration, error) {
		body := fmt.Appendf(nil, `{"id":"evt_open_%d","type":"invoice.paid","data":{"pad":"%s"}}`, i, pad)
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/webhooks/"+h.source, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", stripeSign(body, time.Now(), secret))
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return 0, nil
	}
	for i := range 200 { // warm the connections and pools
		if _, err := send(-1 - i); err != nil {
			b.Fatal(err)
		}
	}
	confirms := &tripTimes{}
	record := confirms.add
	h.confirmed.Store(&record)
	sched0, gc0 := schedLatencies(), gcCycles()
	trips.reset()
	lat := make([]time.Duration, b.N)
	lag := make([]time.Duration, b.N) // from the scheduled time to the send
	var wg sync.WaitGroup
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		at := start.Add(time.Duration(i) * time.Second / rate)
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			lag[i] = time.Since(at)
			if _, err := send(i); err != nil {
				failed.Add(1)
				return
			}
			lat[i] = time.Since(at)
		}()
	}
	wg.Wait()
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d webhooks failed", n)
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	slices.Sort(lag)
	b.ReportMetric(ms(lag[len(lag)/2]), "send-lag-p50-ms")
	b.ReportMetric(ms(lag[len(lag)*99/100]), "send-lag-p99-ms")
	t := trips.sorted()
	if len(t) > 0 {
		b.ReportMetric(ms(t[len(t)/2]), "redis-trip-p50-ms")
		b.ReportMetric(ms(t[len(t)*99/100]), "redis-trip-p99-ms")
		b.ReportMetric(float64(len(t))/float64(b.N), "redis-trips/op")
	}
	if c := confirms.sorted(); len(c) > 0 {
		b.ReportMetric(ms(c[len(c)/2]), "confirm-p50-ms")
		b.ReportMetric(ms(c[len(c)*99/100]), "confirm-p99-ms")
	}
	b.ReportMetric(schedQuantile(sched0, schedLatencies(), 0.99)*1e3, "sched-wait-p99-ms")
	b.ReportMetric(float64(gcCycles()-gc0)*1000/float64(b.N), "gc-cycles/1000-ops")
}

// tripTimes times each Redis round trip (command or pipeline).
type tripTimes struct {
	mu sync.Mutex
	d  []time.Duration
}

func (t *tripTimes) add(d time.Duration) { t.mu.Lock(); t.d = append(t.d, d); t.mu.Unlock() }
func (t *tripTimes) reset()              { t.mu.Lock(); t.d = nil; t.mu.Unlock() }
func (t *tripTimes) sorted() []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Sorted(slices.Values(t.d))
}

func (t *tripTimes) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (t *tripTimes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		t.add(time.Since(start))
		return err
	}
}

func (t *tripTimes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		t.add(time.Since(start))
		return err
	}
}

// schedLatencies is the process's histogram of how long runnable
// goroutines waited for a thread.
func schedLatencies() *rtmetrics.Float64Histogram {
	s := []rtmetrics.Sample{{Name: "/sched/latencies:seconds"}}
	rtmetrics.Read(s)
	return s[0].Value.Float64Histogram()
}

// schedQuantile is quantile q, in seconds (a bucket's upper bound), of the
// waits counted between a and b.
func schedQuantile(a, b *rtmetrics.Float64Histogram, q float64) float64 {
	var total uint64
	counts := make([]uint64, len(b.Counts))
	for i := range b.Counts {
		counts[i] = b.Counts[i] - a.Counts[i]
		total += counts[i]
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range counts {
		if seen += c; seen >= want && c > 0 {
			return b.Buckets[i+1]
		}
	}
	return 0
}

// gcCycles is the number of garbage collections so far.
func gcCycles() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}
