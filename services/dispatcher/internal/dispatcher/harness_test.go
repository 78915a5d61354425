package dispatcher

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// Shared with the other packages' tests.
var (
	amqpURL  = testenv.AMQPURL
	redisURL = testenv.RedisURL
	newID    = testenv.ID
	waitFor  = testenv.WaitFor
)

// harness runs one dispatcher on queues and keys of its own, consuming only
// events whose source is the harness id, so tests can share the broker and
// Redis with everything else.
type harness struct {
	t      *testing.T
	id     string // also the event source
	tenant string
	cfg    Config
	conn   *rabbit.Conn
	rdb    redis.UniversalClient
	reg    *prometheus.Registry
	d      *Dispatcher
	stop   func()
}

func testConfig(id string) Config {
	return Config{
		RetrySchedule:      "100ms,200ms,300ms,400ms,500ms,500ms,500ms,500ms,500ms,500ms",
		Retention:          time.Hour,
		DefaultMaxInFlight: 10,
		DefaultTimeout:     5 * time.Second,
		RotationOverlap:    time.Hour,
		Concurrency:        256,
		BreakerFailures:    5,
		BreakerTimeout:     200 * time.Millisecond,
		QueuePrefix:        "hookyard.test.dispatcher." + id,
		KeyPrefix:          testenv.KeyPrefix(id),
		EventBindings:      id + ".#",
		SourcesKeyPrefix:   testenv.KeyPrefix(id),
		EventIDsKeyPrefix:  testenv.KeyPrefix(id) + ":ids",
		FirstAttemptBudget: 2 * time.Second,
	}
}

// newHarness starts a dispatcher; tweak adjusts the config, allow is
// HOOKYARD_ALLOW_CIDRS.
func newHarness(t *testing.T, allow string, tweak func(*Config)) *harness {
	t.Helper()
	return newHarnessLogging(t, allow, tweak, slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newHarnessLogging is newHarness with the dispatcher logging to logs.
func newHarnessLogging(t *testing.T, allow string, tweak func(*Config), logs slog.Handler) *harness {
	t.Helper()
	id := newID()
	h := &harness{t: t, id: id, tenant: "tenant-" + id, cfg: testConfig(id)}
	if tweak != nil {
		tweak(&h.cfg)
	}
	q := h.cfg.Queues()
	h.conn = testenv.Rabbit(t, q.Declare)
	h.rdb = testenv.Redis(t, h.cfg.KeyPrefix)
	log := slog.New(logs)
	var err error
	h.reg = prometheus.NewRegistry()
	h.d, err = New(h.cfg, Deps{Rabbit: h.conn, Redis: h.rdb, Log: log, AllowCIDRs: allow, Registry: h.reg})
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	// Runs before the connections above are closed and the keys deleted.
	t.Cleanup(func() {
		h.stop()
		h.d.Publisher.Close()
		testenv.DeleteQueues(q.All(), q.Delays().Exchange())
	})
	return h
}

// start runs the consumers; stop cancels them and waits.
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{h.d.RunFanout, h.d.RunDeliveries, h.d.RunDeadLetters} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	h.stop = func() { cancel(); wg.Wait() }
}

func (h *harness) ctx() context.Context { return auth.WithTenant(context.Background(), h.tenant) }

// createEndpoint creates an endpoint through the API and returns it with
// its secret.
func (h *harness) createEndpoint(ep *dispatcherv1.Endpoint) *dispatcherv1.Endpoint {
	h.t.Helper()
	out, err := h.d.Endpoints.CreateEndpoint(h.ctx(), &dispatcherv1.CreateEndpointRequest{Endpoint: ep})
	if err != nil {
		h.t.Fatalf("create endpoint: %v", err)
	}
	return out
}

// publish sends a raw event as ingress would: binary-mode CloudEvent on
// hookyard.events, routing key <source>.<type>.
func (h *harness) publish(id, typ string, body []byte) {
	h.t.Helper()
	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: id, Source: h.id, Type: typ, Tenant: h.tenant, Time: timestamppb.Now(),
		DataContentType: "application/json", Data: body,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.d.Publisher.Publish(ctx, rabbit.EventsExchange, cloudevent.RoutingKey(h.id, typ), msg); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) message(id string) *dispatcherv1.Message {
	h.t.Helper()
	m, err := h.d.Messages.GetMessage(h.ctx(), &dispatcherv1.GetMessageRequest{Id: id})
	if err != nil {
		return nil
	}
	return m
}

func (h *harness) deliveryStatus(msgID, epID string) string {
	m := h.message(msgID)
	for _, d := range m.GetDeliveries() {
		if d.GetEndpointId() == epID {
			return d.GetStatus()
		}
	}
	return ""
}

// counter sums the series of the named counter whose labels include all
// of match.
func (h *harness) counter(name string, match map[string]string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range match {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
