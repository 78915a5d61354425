package receive

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
)

// Webhooks whose dedupe claims share a Redis round trip that an outage
// cuts are all answered 503, none 2xx, and nothing is published; each is
// accepted once when the provider retries after Redis is back.
func TestRedisOutageMidBatchIs503ForEveryRequest(t *testing.T) {
	u, err := url.Parse(redisURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := rabbittest.NewProxy(t, net.JoinHostPort(u.Hostname(), u.Port()))
	pu := *u
	pu.Host = proxy.Addr()
	h := newHarness(t, pu.String())

	send := func(i int) (int, error) {
		body := fmt.Appendf(nil, `{"id":"evt_batch_%d","type":"charge.failed"}`, i)
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/webhooks/"+h.source, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", stripeSign(body, time.Now(), secret))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// Warm up: the source is cached and the dedupe scripts are loaded.
	if code, err := send(-1); err != nil || code != http.StatusAccepted {
		t.Fatalf("warm-up: %d %v", code, err)
	}
	h.waitCount(1)

	const n = 30
	received := func() float64 { return testutil.ToFloat64(h.handler.m.received.WithLabelValues("stripe")) }
	proxy.Freeze()
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := send(i)
			if err != nil {
				t.Error(err)
			}
			codes[i] = code
		}()
	}
	// Let the requests reach Redis, held by the frozen proxy. Those still
	// on the way when it is cut find Redis unreachable: 503 all the same.
	for deadline := time.Now().Add(5 * time.Second); received() < n+1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	proxy.Cut()
	proxy.Thaw()
	wg.Wait()
	for i, code := range codes {
		if code != http.StatusServiceUnavailable {
			t.Errorf("request %d during the outage: status %d, want 503", i, code)
		}
	}
	if got := h.count(); got != 1 {
		t.Fatalf("queue holds %d messages, want only the warm-up's", got)
	}

	proxy.Restore()
	for i := range n {
		deadline := time.Now().Add(15 * time.Second)
		for {
			code, err := send(i)
			if err == nil && code == http.StatusAccepted {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("retry %d after the outage: %d %v", i, code, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	h.waitCount(n + 1)
}
