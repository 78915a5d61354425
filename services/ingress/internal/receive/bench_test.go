package receive

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/redisconn/redistest"
)

// BenchmarkReceiveParallel is the whole receive path over HTTP, against
// the real broker and Redis: signed 1 KiB Stripe webhooks from 32
// goroutines per core, each answered only after its confirm. Besides time
// and allocations it reports counts that host load does not blur: Redis
// round trips per webhook, and the write and read system calls of the
// whole test process (client and server) per webhook.
func BenchmarkReceiveParallel(b *testing.B) {
	h := newHarness(b, "")
	rt := &redistest.RoundTrips{}
	h.rdb.AddHook(rt)
	pad := bytes.Repeat([]byte("x"), 900)
	var seq atomic.Int64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	b.SetParallelism(32)
	b.ReportAllocs()
	w0, r0 := procIO(b)
	trips0 := rt.N()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := fmt.Appendf(nil, `{"id":"evt_%d","type":"invoice.paid","data":{"pad":"%s"}}`, seq.Add(1), pad)
			req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/webhooks/"+h.source, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Stripe-Signature", stripeSign(body, time.Now(), secret))
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.StopTimer()
	w1, r1 := procIO(b)
	b.ReportMetric(float64(rt.N()-trips0)/float64(b.N), "redis-trips/op")
	b.ReportMetric(float64(w1-w0)/float64(b.N), "write-syscalls/op")
	b.ReportMetric(float64(r1-r0)/float64(b.N), "read-syscalls/op")
}

// procIO returns this process's write and read system calls so far.
func procIO(b *testing.B) (writes, reads int64) {
	b.Helper()
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var v int64
		if _, err := fmt.Sscanf(string(line), "syscw: %d", &v); err == nil {
			writes = v
		}
		if _, err := fmt.Sscanf(string(line), "syscr: %d", &v); err == nil {
			reads = v
		}
	}
	return writes, reads
}
