package dispatcher

import (
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/deliver"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/metrics"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// The fan-out's first attempt fails and is settled as "retrying"; the
// broker is lost before the retry task is confirmed (its publish and the
// put-back both fail), so the event comes back and the fan-out runs
// again. The delivery must still happen, once: before, the replay skipped
// the delivery as under way and it stayed "retrying" forever.
func TestFastPathRetryLostAfterSettleIsRepublished(t *testing.T) {
	h := newHarness(t, loopback, nil)
	var mu sync.Mutex
	answered := 0
	s := newSink(t, func(request) int {
		mu.Lock()
		defer mu.Unlock()
		if answered++; answered == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})

	// The fan-out's first attempts go through a worker whose next two
	// publishes fail; the delivery worker publishes normally.
	pub := &testenv.LossyPublisher{Next: h.d.Publisher}
	pub.Fail.Store(2)
	first := deliver.NewWorker(deliver.Config{
		Schedule: []time.Duration{200 * time.Millisecond, 200 * time.Millisecond}, DefaultTimeout: h.cfg.DefaultTimeout,
		DefaultMaxInFlight: h.cfg.DefaultMaxInFlight, BreakerFailures: 1 << 20,
	}, h.cfg.Queues(), endpoint.New(h.rdb, h.cfg.KeyPrefix), message.New(h.rdb, h.cfg.KeyPrefix, h.cfg.Retention),
		admit.New(h.rdb, h.cfg.KeyPrefix, h.cfg.Retention), pub, &http.Client{}, metrics.New(nil), slog.New(slog.DiscardHandler))
	h.stop()
	h.d.Fanout.First = first
	h.start()

	h.publish("fast-lost", "a.b", []byte(`{}`))
	waitFor(t, 30*time.Second, "delivery after the lost retry", func() bool {
		return h.deliveryStatus("fast-lost", ep.GetId()) == "delivered"
	})
	waitFor(t, 30*time.Second, "queues drained", func() bool { e, n := h.queued(); return e == 0 && n == 0 })
	var accepted []string
	all := s.all()
	for i, r := range all {
		if i > 0 { // every request after the first was answered 200
			accepted = append(accepted, r.header.Get("webhook-id"))
		}
	}
	if len(all) != 2 || len(accepted) != 1 || accepted[0] != "fast-lost" {
		t.Fatalf("%d requests, accepted %q; want a 503 then fast-lost accepted once", len(all), accepted)
	}
}
