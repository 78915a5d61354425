package dispatcher

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// A subscriber's Retry-After may slow retries down, never speed them up:
// answering 503 with Retry-After: 1 to every attempt must not turn a
// schedule of hours into one of seconds.
func TestRetryAfterDoesNotShortenSchedule(t *testing.T) {
	h := newHarness(t, loopback, func(c *Config) { c.RetrySchedule = "1s,40s,40s" })
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: srv.URL})
	h.publish("evt-ra", "invoice.paid", []byte(`{}`))

	var d *dispatcherv1.Delivery
	waitFor(t, 20*time.Second, "second attempt recorded", func() bool {
		for _, x := range h.message("evt-ra").GetDeliveries() {
			if x.GetEndpointId() == ep.GetId() && x.GetAttempts() >= 2 && x.GetStatus() == "retrying" {
				d = x
				return true
			}
		}
		return false
	})
	// The schedule's third delay is 40s (jitter 20%): at least 32s after the
	// second attempt.
	if wait := time.Until(d.GetNextAttemptTime().AsTime()); wait < 25*time.Second {
		t.Fatalf("after attempt %d the next is due in %v; the schedule says 40s±20%%", d.GetAttempts(), wait)
	}
	if got := n.Load(); got > 2 {
		t.Fatalf("%d attempts already", got)
	}
}
