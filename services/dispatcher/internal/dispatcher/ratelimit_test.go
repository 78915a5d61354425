package dispatcher

import (
	"fmt"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// A backlog for a rate-limited endpoint must not cost the broker a
// re-publish per task per second: 200 tasks for an endpoint limited to one
// request a second are each put back about once while they wait, not again
// and again.
func TestRateLimitedBacklogIsCheap(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, ok)
	h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL, RateLimit: 1})
	const backlog = 200
	start := time.Now()
	for i := range backlog {
		h.publish(fmt.Sprintf("evt-%d", i), "invoice.paid", []byte(`{}`))
	}
	waitFor(t, 20*time.Second, "first delivery", func() bool { return len(s.all()) >= 1 })
	time.Sleep(10*time.Second - time.Since(start))
	republished := h.counter("hookyard_dispatcher_deferrals_total", nil)
	delivered := len(s.all())
	elapsed := time.Since(start)
	t.Logf("%d deliveries and %.0f re-publishes in %v", delivered, republished, elapsed.Round(time.Second))
	if limit := int(elapsed.Seconds()) + 3; delivered > limit {
		t.Fatalf("%d deliveries in %v at 1 request a second", delivered, elapsed)
	}
	// Each task once, and a little more for the few due within the window.
	if republished > backlog+150 {
		t.Fatalf("%.0f re-publishes for a backlog of %d in 10s", republished, backlog)
	}
}
