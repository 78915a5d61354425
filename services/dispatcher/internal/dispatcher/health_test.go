package dispatcher

import (
	"net/http"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// TestBreakerShowsInTheAPI: the circuit breaker a delivery worker opens is
// in its endpoint's health as the API answers it, with the failure run,
// is taken out when the replica stops, and is shown closed once the
// endpoint recovers.
func TestBreakerShowsInTheAPI(t *testing.T) {
	h := newHarness(t, loopback, func(c *Config) { c.BreakerFailures, c.BreakerTimeout = 2, 5*time.Second })
	s := newSink(t, func(request) int { return http.StatusInternalServerError })
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	health := func() *dispatcherv1.EndpointHealth {
		got, err := h.d.Endpoints.GetEndpoint(h.ctx(), &dispatcherv1.GetEndpointRequest{Id: ep.GetId()})
		if err != nil {
			t.Fatalf("get endpoint: %v", err)
		}
		return got.GetHealth()
	}
	if got := health(); got.GetBreakerState() != "closed" || got.GetFailureCount() != 0 {
		t.Fatalf("health of a new endpoint: %v", got)
	}
	h.publish("evt-1", "invoice.paid", []byte(`{}`))
	h.publish("evt-2", "invoice.paid", []byte(`{}`))
	var open *dispatcherv1.EndpointHealth
	// The breaker opens before the failure that opened it is written down.
	waitFor(t, 30*time.Second, "the breaker to show open after two failures", func() bool {
		open = health()
		return open.GetBreakerState() == "open" && open.GetFailureCount() >= 2
	})
	if open.GetBreakerReplicas() != 1 || open.GetBreakerUntil() == nil {
		t.Fatalf("open breaker: %v", open)
	}

	// A replica that stops takes its breakers out of the shared view.
	h.stop()
	if got := health(); got.GetBreakerState() != "closed" || got.GetBreakerReplicas() != 0 {
		t.Fatalf("health after the only replica stopped: %v", got)
	}
	h.start()

	s.setAnswer(ok)
	waitFor(t, 60*time.Second, "the breaker to show closed", func() bool {
		got := health()
		return got.GetBreakerState() == "closed" && got.GetBreakerReplicas() == 0 && got.GetFailureCount() == 0
	})
}
