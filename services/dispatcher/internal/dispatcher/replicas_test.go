package dispatcher

import (
	"net/http"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/redisconn"
)

// The fan-out does not acknowledge an event while its record is on the
// Redis primary only: asked to wait for a replica the test Redis does not
// have, it puts the event back (counted as an error); once no replica is
// asked for, the event is delivered.
func TestFanoutWaitsForReplica(t *testing.T) {
	h := newHarness(t, "127.0.0.0/8", nil)
	s := newSink(t, func(request) int { return http.StatusOK })
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	if err := redisconn.SetWait(h.rdb, redisconn.WaitConfig{Replicas: 1, Timeout: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	h.publish("evt-replica", "a.b", []byte(`{}`))
	waitFor(t, 30*time.Second, "the event put back", func() bool {
		return h.counter("hookyard_dispatcher_fanout_events_total", map[string]string{"result": "error"}) >= 1
	})
	if err := redisconn.SetWait(h.rdb, redisconn.WaitConfig{Replicas: 0, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "delivered", func() bool { return h.deliveryStatus("evt-replica", ep.GetId()) == "delivered" })
}
