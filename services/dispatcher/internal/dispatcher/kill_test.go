package dispatcher

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/proctest"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
)

// TestKillWithRetriesPending runs the real binary, SIGKILLs it while every
// delivery waits for a retry, starts a new one, and expects every delivery
// to happen: pending retries live in RabbitMQ, not in the process.
func TestKillWithRetriesPending(t *testing.T) {
	bin := proctest.Build(t, "../../cmd/dispatcher")

	// The in-process harness only provides queues, keys and cleanup here;
	// its consumers are stopped so the subprocess does all the work.
	h := newHarness(t, loopback, nil)
	h.stop()
	h.stop = func() {}

	var mu sync.Mutex
	first := map[string]bool{}
	success := map[string]int{}
	s := newSink(t, func(r request) int {
		id := r.header.Get("webhook-id")
		mu.Lock()
		defer mu.Unlock()
		if !first[id] {
			first[id] = true
			return http.StatusInternalServerError
		}
		success[id]++
		return http.StatusOK
	})
	eps := endpoint.New(h.rdb, h.cfg.KeyPrefix)
	if _, err := eps.Create(context.Background(), h.tenant, &dispatcherv1.Endpoint{Url: s.URL}); err != nil {
		t.Fatal(err)
	}

	run := func() *proctest.Proc {
		return proctest.Start(t, bin,
			"HOOKYARD_AMQP_URL="+amqpURL(), "HOOKYARD_REDIS_URL="+redisURL(),
			"HOOKYARD_HTTP_ADDR=127.0.0.1:0", "HOOKYARD_GRPC_ADDR=127.0.0.1:0",
			"HOOKYARD_API_KEYS=test:testkey-123", "HOOKYARD_ALLOW_CIDRS="+loopback,
			"HOOKYARD_RETRY_SCHEDULE=3s,1s,1s", "HOOKYARD_LOG_LEVEL=warn",
			// Every first attempt fails on purpose; keep the breaker out of it.
			"HOOKYARD_DISPATCHER_BREAKER_FAILURES=1000",
			"HOOKYARD_DISPATCHER_QUEUE_PREFIX="+h.cfg.QueuePrefix,
			"HOOKYARD_DISPATCHER_KEY_PREFIX="+h.cfg.KeyPrefix,
			"HOOKYARD_DISPATCHER_EVENT_BINDINGS="+h.cfg.EventBindings,
		)
	}

	p := run()
	const n = 20
	for i := range n {
		h.publish(fmt.Sprintf("kill-%d", i), "job.done", fmt.Appendf(nil, `{"i":%d}`, i))
	}
	waitFor(t, 20*time.Second, "every first attempt to fail", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(first) == n
	})
	// Give the process the moment it needs to confirm the retry publishes
	// it acks after, then kill it without any chance to drain.
	time.Sleep(300 * time.Millisecond)
	p.Kill()
	mu.Lock()
	if len(success) != 0 {
		mu.Unlock()
		t.Fatalf("%d retries happened before the kill; the test proves nothing", len(success))
	}
	mu.Unlock()

	run()
	waitFor(t, 30*time.Second, "every delivery after the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(success) == n
	})
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for id, c := range success {
		if c != 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
}
