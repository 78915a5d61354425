package dispatcher

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/durationpb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/proctest"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
)

// runOnly stops the harness's consumers and runs only the given ones.
func (h *harness) runOnly(runs ...func(context.Context) error) {
	h.stop()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	h.stop = func() { cancel(); wg.Wait() }
}

// queued counts the messages ready in the harness's queues: the events
// queue, and the deliveries and delay queues holding tasks.
func (h *harness) queued() (events, tasks int) {
	h.t.Helper()
	conn, err := amqp.Dial(amqpURL())
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	q := h.cfg.Queues()
	count := func(name string) int {
		ch, err := conn.Channel()
		if err != nil {
			h.t.Fatal(err)
		}
		defer ch.Close()
		st, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			h.t.Fatalf("inspect %s: %v", name, err)
		}
		return st.Messages
	}
	for _, name := range append([]string{q.Deliveries}, q.Delays().Queues()...) {
		tasks += count(name)
	}
	return count(q.Events), tasks
}

// The fan-out makes the first attempt of a delivery itself: with no
// delivery worker running at all, every event is delivered and no task is
// ever published.
func TestFastPathDeliversWithoutTask(t *testing.T) {
	h := newHarness(t, loopback, nil)
	h.runOnly(h.d.RunFanout)
	s1, s2 := newSink(t, ok), newSink(t, ok)
	ep1 := h.createEndpoint(&dispatcherv1.Endpoint{Url: s1.URL})
	ep2 := h.createEndpoint(&dispatcherv1.Endpoint{Url: s2.URL})
	const n = 5
	for i := range n {
		h.publish(fmt.Sprintf("fast-%d", i), "invoice.paid", []byte(`{}`))
	}
	waitFor(t, 20*time.Second, "every delivery through the fan-out alone", func() bool {
		for i := range n {
			id := fmt.Sprintf("fast-%d", i)
			if h.deliveryStatus(id, ep1.GetId()) != "delivered" || h.deliveryStatus(id, ep2.GetId()) != "delivered" {
				return false
			}
		}
		return true
	})
	if got := len(s1.all()) + len(s2.all()); got != 2*n {
		t.Fatalf("%d requests for %d deliveries", got, 2*n)
	}
	if _, tasks := h.queued(); tasks != 0 {
		t.Fatalf("%d tasks published for deliveries that succeeded at once", tasks)
	}
	if done := h.counter("hookyard_dispatcher_first_attempts_total", map[string]string{"result": "done"}); done != 2*n {
		t.Fatalf("first attempts done: %v, want %d", done, 2*n)
	}
}

// A slow endpoint holds a fan-out slot for one budget at most: with one
// fan-out slot, the healthy endpoints get the second event while the slow
// one still holds the first. The slow delivery is handed over to a task,
// and once the subscriber answers it is delivered exactly once.
func TestFastPathSlowEndpointHandedOver(t *testing.T) {
	h := newHarness(t, loopback, func(c *Config) {
		c.FirstAttemptBudget = 300 * time.Millisecond
		c.DefaultTimeout = 60 * time.Second
	})
	h.runOnly() // nothing runs while the fan-out is reconfigured
	h.d.Fanout.Concurrency = 1
	h.runOnly(h.d.RunFanout)

	release := make(chan struct{})
	slow := newSink(t, func(request) int { <-release; return http.StatusOK })
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the sink closes
	fast1, fast2 := newSink(t, ok), newSink(t, ok)
	slowEp := h.createEndpoint(&dispatcherv1.Endpoint{Url: slow.URL})
	h.createEndpoint(&dispatcherv1.Endpoint{Url: fast1.URL})
	h.createEndpoint(&dispatcherv1.Endpoint{Url: fast2.URL})

	h.publish("slow-1", "invoice.paid", []byte(`{}`))
	h.publish("slow-2", "invoice.paid", []byte(`{}`))
	waitFor(t, 20*time.Second, "both events at the healthy endpoints while the slow one holds the first", func() bool {
		return len(fast1.all()) == 2 && len(fast2.all()) == 2
	})
	waitFor(t, 20*time.Second, "the slow deliveries handed over to tasks", func() bool {
		events, tasks := h.queued()
		return events == 0 && tasks == 2
	})
	if got := len(slow.all()); got != 1 {
		t.Fatalf("slow endpoint got %d requests while the first still runs, want 1", got)
	}

	free()
	h.runOnly(h.d.RunFanout, h.d.RunDeliveries)
	waitFor(t, 30*time.Second, "both slow deliveries", func() bool {
		return h.deliveryStatus("slow-1", slowEp.GetId()) == "delivered" && h.deliveryStatus("slow-2", slowEp.GetId()) == "delivered"
	})
	waitFor(t, 30*time.Second, "the handed-over tasks drained", func() bool {
		_, tasks := h.queued()
		return tasks == 0
	})
	h.stop() // every task handled and acked
	count := map[string]int{}
	for _, r := range slow.all() {
		count[r.header.Get("webhook-id")]++
	}
	if count["slow-1"] != 1 || count["slow-2"] != 1 || len(count) != 2 {
		t.Fatalf("slow endpoint requests by webhook-id: %v, want each once", count)
	}
}

// What a limit holds back still goes through a task: a rate-limited
// endpoint gets its first event at once and a task for each of the others,
// and a disabled endpoint's deliveries are held, not attempted.
func TestFastPathLimitedAndDisabledGoToTasks(t *testing.T) {
	h := newHarness(t, loopback, nil)
	h.runOnly(h.d.RunFanout)
	limited, off := newSink(t, ok), newSink(t, ok)
	lim := h.createEndpoint(&dispatcherv1.Endpoint{Url: limited.URL, RateLimit: 1})
	dis := h.createEndpoint(&dispatcherv1.Endpoint{Url: off.URL, Disabled: true})
	const n = 3
	for i := range n {
		h.publish(fmt.Sprintf("lim-%d", i), "invoice.paid", []byte(`{}`))
	}
	waitFor(t, 20*time.Second, "one delivery, tasks for the rest, holds for the disabled endpoint", func() bool {
		events, tasks := h.queued()
		held := 0
		for i := range n {
			if h.deliveryStatus(fmt.Sprintf("lim-%d", i), dis.GetId()) == "held" {
				held++
			}
		}
		return events == 0 && tasks == n-1 && len(limited.all()) == 1 && held == n
	})
	if got := len(off.all()); got != 0 {
		t.Fatalf("disabled endpoint got %d requests", got)
	}
	if rl := h.counter("hookyard_dispatcher_deferrals_total", map[string]string{"reason": "rate_limit"}); rl != n-1 {
		t.Fatalf("rate-limit deferrals %v, want %d", rl, n-1)
	}
	h.runOnly(h.d.RunFanout, h.d.RunDeliveries)
	waitFor(t, 20*time.Second, "the limited deliveries through their tasks", func() bool {
		for i := range n {
			if h.deliveryStatus(fmt.Sprintf("lim-%d", i), lim.GetId()) != "delivered" {
				return false
			}
		}
		return true
	})
}

// kill -9 of the dispatcher while the fan-out's first attempts are under
// way loses nothing: after a restart every delivery arrives, and whatever
// arrives twice carries the same webhook-id.
func TestKillDuringFirstAttempts(t *testing.T) {
	bin := proctest.Build(t, "../../cmd/dispatcher")
	h := newHarness(t, loopback, nil)
	h.stop()
	h.stop = func() {}

	var mu sync.Mutex
	got := map[string]int{} // "<sink>/<webhook-id>"
	sinkFor := func(name string) *sink {
		return newSink(t, func(r request) int {
			time.Sleep(100 * time.Millisecond) // keeps attempts in flight
			mu.Lock()
			got[name+"/"+r.header.Get("webhook-id")]++
			mu.Unlock()
			return http.StatusOK
		})
	}
	a, b := sinkFor("a"), sinkFor("b")
	eps := endpoint.New(h.rdb, h.cfg.KeyPrefix)
	for _, s := range []*sink{a, b} {
		if _, err := eps.Create(context.Background(), h.tenant, &dispatcherv1.Endpoint{Url: s.URL, Timeout: durationpb.New(10 * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	run := func() *proctest.Proc {
		return proctest.Start(t, bin,
			"HOOKYARD_AMQP_URL="+amqpURL(), "HOOKYARD_REDIS_URL="+redisURL(),
			"HOOKYARD_HTTP_ADDR=127.0.0.1:0", "HOOKYARD_GRPC_ADDR=127.0.0.1:0",
			"HOOKYARD_API_KEYS=test:testkey-123", "HOOKYARD_ALLOW_CIDRS="+loopback,
			"HOOKYARD_RETRY_SCHEDULE=1s,1s,1s", "HOOKYARD_LOG_LEVEL=warn",
			"HOOKYARD_DISPATCHER_FIRST_ATTEMPT_BUDGET=5s",
			"HOOKYARD_DISPATCHER_QUEUE_PREFIX="+h.cfg.QueuePrefix,
			"HOOKYARD_DISPATCHER_KEY_PREFIX="+h.cfg.KeyPrefix,
			"HOOKYARD_DISPATCHER_EVENT_BINDINGS="+h.cfg.EventBindings,
		)
	}
	p := run()
	const n = 40
	want := map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("kill-first-%d", i)
		want["a/"+id], want["b/"+id] = true, true
		h.publish(id, "job.done", fmt.Appendf(nil, `{"i":%d}`, i))
	}
	waitFor(t, 20*time.Second, "some first attempts", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 10
	})
	p.Kill()
	mu.Lock()
	before := len(got)
	mu.Unlock()
	if before == len(want) {
		t.Fatalf("every delivery happened before the kill; the test proves nothing")
	}

	run()
	waitFor(t, 60*time.Second, "every delivery after the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(want)
	})
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for k, c := range got {
		if !want[k] {
			t.Errorf("unexpected delivery %s", k)
		}
		dups += c - 1
	}
	t.Logf("%d of %d deliveries before the kill; %d duplicates (same webhook-id)", before, len(want), dups)
}
