package deliver

import (
	"net/http"
	"testing"

	"github.com/sony/gobreaker/v2"
)

// The circuit breaker counts only the subscriber's own answers and
// timeouts: a Redis round trip failing before the attempt (admission) or
// after it (the settle write) does not count as a failure of the
// endpoint, however often it happens; a subscriber answering 503 does.
func TestBreakerCountsOnlyTheSubscriber(t *testing.T) {
	const failures = 2
	t.Run("redis errors", func(t *testing.T) {
		e := newSettleEnv(t, http.StatusOK)
		e.worker.cfg.BreakerFailures = failures
		e.handle(0) // loads the scripts
		for range 3 * failures {
			for failAt := 1; failAt <= 3; failAt++ {
				e.handle(failAt)
			}
		}
		if st := e.worker.breaker(e.ep.GetId()).cb.State(); st != gobreaker.StateClosed {
			t.Fatalf("after Redis errors only, the breaker is %v, want closed", st)
		}
	})
	t.Run("subscriber 503", func(t *testing.T) {
		e := newSettleEnv(t, http.StatusServiceUnavailable)
		e.worker.cfg.BreakerFailures = failures
		for range failures {
			e.handle(0)
		}
		if st := e.worker.breaker(e.ep.GetId()).cb.State(); st != gobreaker.StateOpen {
			t.Fatalf("after %d answers 503, the breaker is %v, want open", failures, st)
		}
	})
}
