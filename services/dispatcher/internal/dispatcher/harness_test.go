package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
)

func amqpURL() string {
	if u := os.Getenv("HOOKYARD_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func redisURL() string {
	if u := os.Getenv("HOOKYARD_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

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
		KeyPrefix:          "hookyard:test:dispatcher:" + id,
		EventBindings:      id + ".#",
	}
}

func newID() string { return fmt.Sprintf("t%x%04x", time.Now().UnixNano(), rand.N(1<<16)) }

// newHarness starts a dispatcher; tweak adjusts the config, allow is
// HOOKYARD_ALLOW_CIDRS.
func newHarness(t *testing.T, allow string, tweak func(*Config)) *harness {
	t.Helper()
	id := newID()
	h := &harness{t: t, id: id, tenant: "tenant-" + id, cfg: testConfig(id)}
	if tweak != nil {
		tweak(&h.cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := h.cfg.Queues()
	h.conn = rabbit.DialConfig(ctx, amqpURL(), rabbit.Config{Setup: rabbit.DeclareFunc(rabbit.DeclareTopology, q.Declare)})
	rdb, err := redisconn.Open(redisURL())
	if err != nil {
		t.Fatal(err)
	}
	h.rdb = rdb
	waitFor(t, 10*time.Second, "broker connection", func() bool { return h.conn.Check(context.Background()) == nil })
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h.d, err = New(h.cfg, Deps{Rabbit: h.conn, Redis: rdb, Log: log, AllowCIDRs: allow})
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	t.Cleanup(func() {
		h.stop()
		h.d.Publisher.Close()
		h.cleanupBroker(q.All())
		h.cleanupRedis(h.cfg.KeyPrefix)
		cancel()
		h.conn.Close()
		rdb.Close()
	})
	return h
}

// start runs the consumers; stop cancels them and waits.
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{h.d.RunFanout, h.d.RunDeliveries} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	h.stop = func() { cancel(); wg.Wait() }
}

func (h *harness) cleanupBroker(queues []string) {
	conn, err := amqp.Dial(amqpURL())
	if err != nil {
		return
	}
	defer conn.Close()
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_, _ = ch.QueueDelete(q, false, false, false)
		ch.Close()
	}
}

func (h *harness) cleanupRedis(prefix string) {
	ctx := context.Background()
	iter := h.rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		h.rdb.Del(ctx, keys[:n]...)
		keys = keys[n:]
	}
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

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
