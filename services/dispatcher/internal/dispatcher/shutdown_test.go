package dispatcher

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// An attempt still running when the shutdown grace runs out is cut and its
// task returned as it was: it is not counted as a failed attempt, and the
// next replica delivers it.
func TestShutdownReturnsCutAttempt(t *testing.T) {
	h := newHarness(t, loopback, func(c *Config) { c.ShutdownGrace = 300 * time.Millisecond })
	var slow atomic.Bool
	slow.Store(true)
	s := newSink(t, func(request) int {
		if slow.Load() {
			time.Sleep(3 * time.Second)
		}
		return http.StatusOK
	})
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.publish("evt-cut", "a.b", []byte(`{}`))
	waitFor(t, 10*time.Second, "the attempt to start", func() bool { return len(s.all()) == 1 })
	start := time.Now()
	h.stop()
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Fatalf("stopping took %v with a grace of 300ms", d)
	}
	for _, d := range h.message("evt-cut").GetDeliveries() {
		if d.GetEndpointId() == ep.GetId() && (d.GetStatus() != "pending" || d.GetAttempts() != 0) {
			t.Fatalf("after a cut attempt the delivery is %s with %d attempts, want pending with 0", d.GetStatus(), d.GetAttempts())
		}
	}
	slow.Store(false)
	h.start()
	waitFor(t, 20*time.Second, "delivery by the next replica", func() bool { return h.deliveryStatus("evt-cut", ep.GetId()) == "delivered" })
}
