package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Op performs request number i and returns an HTTP-like status: a 2xx code
// for success, another code for an answered failure, or 0 with a non-nil
// error for a failure without an answer. Publishes report 200 once
// confirmed, so the broker ceiling goes through the same generators as the
// HTTP phases.
type Op func(ctx context.Context, i int) (int, error)

// outcome is one request's record. Each request writes only its own slot,
// so the generators need no locking on the hot path.
type outcome struct {
	status int
	lat    time.Duration
	err    error
}

// ClosedLoop runs n requests on workers goroutines, each sending its next
// request as soon as the previous one is answered. This finds the saturation
// throughput: the server is never idle while a worker waits. Latency is
// measured per request from its actual send time, which is correct for a
// closed loop (the next send waits for the answer by design).
func ClosedLoop(ctx context.Context, name string, workers, n int, op Op) Summary {
	out := make([]outcome, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				code, err := op(ctx, i)
				out[i] = outcome{status: code, lat: time.Since(t0), err: err}
			}
		}()
	}
	wg.Wait()
	return collect(Summary{Name: name, Elapsed: time.Since(start)}, out, int(min(next.Load(), int64(n))))
}

// OpenLoop sends requests at a fixed rate for d, whatever the server does,
// and measures each latency from the request's scheduled send time rather
// than from when it was actually sent. A closed loop (or a rate limiter that
// waits for answers) silently stops sending while the server stalls and so
// never records the stall's effect on the requests that should have been
// sent meanwhile ("coordinated omission"); measuring from the schedule
// charges every stall to every request it delayed.
//
// At most maxInflight requests are outstanding; if that bound is reached the
// scheduler falls behind, which still shows in the latencies because they
// are taken from the schedule.
func OpenLoop(ctx context.Context, name string, rate float64, d time.Duration, maxInflight int, op Op) (Summary, error) {
	if rate <= 0 || d <= 0 {
		return Summary{}, fmt.Errorf("open loop %s: rate %.1f/s and duration %v must be positive", name, rate, d)
	}
	total := int(rate * d.Seconds())
	if total < 1 {
		total = 1
	}
	interval := time.Duration(float64(time.Second) / rate)
	out := make([]outcome, total)
	sem := make(chan struct{}, maxInflight)
	var wg sync.WaitGroup
	timer := time.NewTimer(0)
	<-timer.C
	start := time.Now()
	sent := 0
loop:
	for i := range total {
		sched := start.Add(time.Duration(i) * interval)
		if wait := time.Until(sched); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break loop
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		sent++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			code, err := op(ctx, i)
			out[i] = outcome{status: code, lat: time.Since(sched), err: err}
		}()
	}
	wg.Wait()
	s := collect(Summary{Name: name, Elapsed: time.Since(start), Offered: rate}, out, sent)
	return s, ctx.Err()
}

// collect turns the first n outcomes into a Summary.
func collect(s Summary, out []outcome, n int) Summary {
	s.Sent = n
	s.Statuses = map[int]int{}
	lat := make([]time.Duration, 0, n)
	for _, o := range out[:n] {
		switch {
		case o.err != nil || o.status == 0:
			s.Errors++
			if s.FirstErr == "" && o.err != nil {
				s.FirstErr = o.err.Error()
			}
			continue
		case o.status >= 200 && o.status < 300:
			s.OK++
		default:
			s.Non2xx++
		}
		s.Statuses[o.status]++
		lat = append(lat, o.lat)
	}
	return summarize(s, lat)
}

// NewClient returns an HTTP client that keeps up to conns keep-alive
// connections to one host. The default transport keeps only two idle
// connections per host, so with more workers most requests would open a
// fresh TCP connection and the benchmark would measure connection set-up
// instead of the server.
func NewClient(conns int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil, // loopback only; never go through a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// HTTPOp adapts a request builder to an Op: it sends the request, drains and
// closes the body (so the connection is reused) and returns the status.
func HTTPOp(client *http.Client, build func(ctx context.Context, i int) (*http.Request, error)) Op {
	return func(ctx context.Context, i int) (int, error) {
		req, err := build(ctx, i)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
}
