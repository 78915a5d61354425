package receive

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReceiveParallel is the whole receive path over HTTP, against
// the real broker and Redis: signed 1 KiB Stripe webhooks from 32
// goroutines per core, each answered only after its confirm.
func BenchmarkReceiveParallel(b *testing.B) {
	h := newHarness(b, "")
	pad := bytes.Repeat([]byte("x"), 900)
	var seq atomic.Int64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	b.SetParallelism(32)
	b.ReportAllocs()
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
}
