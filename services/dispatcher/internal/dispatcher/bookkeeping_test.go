package dispatcher

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/durationpb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
)

// If Redis fails right after a successful attempt, the dispatcher retries
// writing down the success, not the delivery: the subscriber gets the
// message once.
func TestRedisFailureAfterSuccessDoesNotRedeliver(t *testing.T) {
	h := newHarness(t, loopback, nil)
	h.stop() // only the replica behind the proxy delivers

	u, err := url.Parse(redisURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := rabbittest.NewProxy(t, u.Host)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: 0, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	d, err := New(h.cfg, Deps{Rabbit: h.conn, Redis: rdb, Log: slog.New(slog.DiscardHandler), AllowCIDRs: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Publisher.Close()

	var once sync.Once
	s := newSink(t, func(request) int {
		// Redis goes away while the subscriber handles the request, and
		// comes back two seconds later.
		once.Do(func() {
			proxy.Cut()
			time.AfterFunc(2*time.Second, proxy.Restore)
		})
		return http.StatusOK
	})
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{d.RunFanout, d.RunDeliveries} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()

	h.publish("evt-once", "a.b", []byte(`{}`))
	waitFor(t, 20*time.Second, "delivered status", func() bool { return h.deliveryStatus("evt-once", ep.GetId()) == "delivered" })
	// Long enough for a retried task (5s after an infrastructure error)
	// to come back and be delivered again.
	time.Sleep(7 * time.Second)
	if n := len(s.all()); n != 1 {
		t.Fatalf("subscriber got the message %d times, want once", n)
	}
}

// A Redis outage of up to 30 s right after a successful attempt must not
// redeliver either: the attempt's write is retried (its task held
// meanwhile) for longer than that, and the attempt lock outlives the
// outage, so the copy of the task that the fan-out hands over when the
// attempt outlasts its budget waits instead of delivering again. With
// a one-second endpoint timeout, the lock used to expire six seconds
// after the attempt started and the write was given up after six.
func TestLongRedisOutageAfterSuccessDoesNotRedeliver(t *testing.T) {
	if testing.Short() {
		t.Skip("cuts Redis for 12 s")
	}
	h := newHarness(t, loopback, nil)
	h.stop()

	u, err := url.Parse(redisURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := rabbittest.NewProxy(t, u.Host)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: 0, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	d, err := New(h.cfg, Deps{Rabbit: h.conn, Redis: rdb, Log: slog.New(slog.DiscardHandler), AllowCIDRs: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Publisher.Close()

	var once sync.Once
	s := newSink(t, func(request) int {
		once.Do(func() {
			proxy.Cut()
			time.AfterFunc(12*time.Second, proxy.Restore)
		})
		return http.StatusOK
	})
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL, Timeout: durationpb.New(time.Second)})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{d.RunFanout, d.RunDeliveries} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()

	h.publish("evt-outage", "a.b", []byte(`{}`))
	waitFor(t, 60*time.Second, "delivered status", func() bool { return h.deliveryStatus("evt-outage", ep.GetId()) == "delivered" })
	// Long enough for any copy put back during the outage (5 s after an
	// infrastructure error, 1 s to 30 s when deferred) to come back.
	time.Sleep(12 * time.Second)
	if n := len(s.all()); n != 1 {
		t.Fatalf("subscriber got the message %d times, want once", n)
	}
}

// A fan-out that crashed after publishing its tasks and before recording
// the deliveries publishes them again when the event comes back: the two
// copies of a task must not make two retry chains, each making every
// attempt of the schedule.
func TestDuplicateTaskMakesOneRetryChain(t *testing.T) {
	h := newHarness(t, loopback, func(c *Config) { c.RetrySchedule = "200ms,200ms,200ms" })
	s := newSink(t, func(request) int { return http.StatusInternalServerError })
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.stop()

	m := &message.Message{ID: "evt-dup", Source: h.id, Type: "a.b", RoutingKey: h.id + ".a.b", CreateTime: time.Now(), Body: []byte(`{}`)}
	if _, err := message.New(h.rdb, h.cfg.KeyPrefix, h.cfg.Retention).Record(context.Background(), h.tenant, m); err != nil {
		t.Fatal(err)
	}
	q := h.cfg.Queues()
	for range 2 {
		tk := &task.Task{Tenant: h.tenant, Message: m.ID, Endpoint: ep.GetId(), RoutingKey: m.RoutingKey, Body: m.Body}
		if err := q.Enqueue(context.Background(), h.d.Publisher, tk); err != nil {
			t.Fatal(err)
		}
	}
	h.start()
	waitFor(t, 20*time.Second, "dead letter", func() bool { return h.deliveryStatus(m.ID, ep.GetId()) == "failed" })
	time.Sleep(2 * time.Second)
	if n := len(s.all()); n != 4 {
		t.Fatalf("%d attempts for a schedule of 1+3, want 4", n)
	}
}
