package dispatcher

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
)

// adminChannel is a channel of the test's own on the real broker, closed
// with the test.
func adminChannel(t *testing.T) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(amqpURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// queueDepth returns the ready messages of a queue.
func queueDepth(t *testing.T, ch *amqp.Channel, name string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return q.Messages
}

// An event that arrives while Redis is down must wait for it, however
// long that takes: quorum queues count every requeue against the delivery
// limit, so requeueing would dead-letter the event after a few seconds.
func TestRedisOutageKeepsEvents(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, ok)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL + "/hook", EventTypes: []string{h.id + ".order.*"}})
	h.stop() // the healthy dispatcher steps aside during the outage

	// A replica whose Redis refuses connections.
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond,
		DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	defer dead.Close()
	reg := prometheus.NewRegistry()
	down, err := New(h.cfg, Deps{Rabbit: h.conn, Redis: dead, Log: slog.New(slog.DiscardHandler), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Publisher.Close()
	down.Fanout.RetryDelay = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = down.RunFanout(ctx) }()

	h.publish("evt-outage", "order.created", []byte(`{"n":1}`))
	// Far more rounds than the queue's delivery limit.
	dlq, admin := rabbit.DLQName(h.cfg.Queues().Events), adminChannel(t)
	waitFor(t, 20*time.Second, "repeated fan-out failures", func() bool {
		return failedFanouts(t, reg) >= 3*rabbit.DefaultDeliveryLimit || queueDepth(t, admin, dlq) > 0
	})
	cancel()
	wg.Wait()
	if n := queueDepth(t, admin, dlq); n != 0 {
		t.Fatalf("%d events dead-lettered during a Redis outage, after %d failed fan-outs", n, failedFanouts(t, reg))
	}

	// Redis is back: the event is delivered, under its original routing
	// key (the endpoint matches only order.*).
	h.start()
	waitFor(t, 10*time.Second, "delivery after the outage", func() bool { return len(s.all()) == 1 })
	if got := s.all()[0].header.Get("webhook-id"); got != "evt-outage" {
		t.Fatalf("delivered %q, want evt-outage", got)
	}
	waitFor(t, 5*time.Second, "delivered status", func() bool { return h.deliveryStatus("evt-outage", ep.GetId()) == "delivered" })
}

// failedFanouts reads hookyard_dispatcher_fanout_events_total{result="error"}.
func failedFanouts(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "hookyard_dispatcher_fanout_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == "error" {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

// A resend that cannot reach the broker fails without losing the dead
// letter: it stays listed and recoverable, and a later resend delivers.
func TestResendDuringBrokerOutageKeepsDeadLetter(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, func(request) int { return http.StatusBadRequest })
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.publish("perm-out", "x.y", []byte(`{"p":1}`))
	waitFor(t, 10*time.Second, "dead letter", func() bool { return h.deliveryStatus("perm-out", ep.GetId()) == "failed" })

	// A replica whose broker connection is cut.
	proxy := rabbittest.NewBrokerProxy(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn := rabbit.DialConfig(ctx, proxy.URL(), rabbit.Config{})
	defer conn.Close()
	waitFor(t, 10*time.Second, "proxied broker connection", func() bool { return conn.Check(context.Background()) == nil })
	cut, err := New(h.cfg, Deps{Rabbit: conn, Redis: h.rdb, Log: slog.New(slog.DiscardHandler), AllowCIDRs: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Publisher.Close()
	proxy.Cut()
	rctx, rcancel := context.WithTimeout(h.ctx(), 3*time.Second)
	defer rcancel()
	if _, err := cut.Messages.ResendMessage(rctx, &dispatcherv1.ResendMessageRequest{Id: "perm-out"}); err == nil {
		t.Fatal("resend succeeded with the broker unreachable")
	}
	dls, err := h.d.Messages.ListDeadLetters(h.ctx(), &dispatcherv1.ListDeadLettersRequest{EndpointId: ep.GetId()})
	if err != nil || len(dls.GetDeadLetters()) != 1 {
		t.Fatalf("dead letters after a failed resend: %v, %v; want the one", dls, err)
	}
	if st := h.deliveryStatus("perm-out", ep.GetId()); st != "failed" {
		t.Fatalf("status after a failed resend: %q, want failed", st)
	}

	s.setAnswer(ok)
	if _, err := h.d.Endpoints.RecoverEndpoint(h.ctx(), &dispatcherv1.RecoverEndpointRequest{Id: ep.GetId()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "delivery after recover", func() bool { return h.deliveryStatus("perm-out", ep.GetId()) == "delivered" })
}

// A broker outage stops deliveries and nothing else: once the broker is
// back, the same dispatcher reconnects, consumes again, and delivers what
// was published meanwhile and after.
func TestBrokerOutageThenDeliveriesResume(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, ok)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL, EventTypes: []string{h.id + ".#"}})
	h.stop() // only the replica behind the proxy consumes

	proxy := rabbittest.NewBrokerProxy(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn := rabbit.DialConfig(ctx, proxy.URL(), rabbit.Config{Setup: rabbit.DeclareFunc(rabbit.DeclareTopology, h.cfg.Queues().Declare)})
	defer conn.Close()
	waitFor(t, 10*time.Second, "proxied broker connection", func() bool { return conn.Check(context.Background()) == nil })
	d, err := New(h.cfg, Deps{Rabbit: conn, Redis: h.rdb, Log: slog.New(slog.DiscardHandler), AllowCIDRs: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Publisher.Close()
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{d.RunFanout, d.RunDeliveries} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()

	h.publish("before", "a.b", []byte(`{}`))
	waitFor(t, 10*time.Second, "delivery before the outage", func() bool { return h.deliveryStatus("before", ep.GetId()) == "delivered" })

	proxy.Cut()
	waitFor(t, 10*time.Second, "the outage to be seen", func() bool { return conn.Check(context.Background()) != nil })
	h.publish("during", "a.b", []byte(`{}`)) // straight to the broker, which is up
	time.Sleep(500 * time.Millisecond)
	if n := len(s.all()); n != 1 {
		t.Fatalf("%d deliveries while the dispatcher had no broker, want 1", n)
	}
	proxy.Restore()
	waitFor(t, 20*time.Second, "reconnect", func() bool { return conn.Check(context.Background()) == nil })
	h.publish("after", "a.b", []byte(`{}`))
	for _, id := range []string{"during", "after"} {
		waitFor(t, 20*time.Second, "delivery of "+id, func() bool { return h.deliveryStatus(id, ep.GetId()) == "delivered" })
	}
	if n := len(s.all()); n != 3 {
		t.Fatalf("%d requests, want 3 (one per event)", n)
	}
}

// A success ends the failure run even when the replica's cached copy of
// the endpoint predates the failure that started it; a run left behind
// would auto-disable the endpoint at its next failure, however healthy.
func TestSuccessEndsFailureRunSeenOnlyInRedis(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, ok)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL, EventTypes: []string{h.id + ".#"}})
	h.publish("warm", "a.b", []byte(`{}`)) // loads the endpoint into the cache
	waitFor(t, 10*time.Second, "first delivery", func() bool { return h.deliveryStatus("warm", ep.GetId()) == "delivered" })
	// A failure recorded by another replica, not in this one's cache.
	if _, err := h.d.Endpoints.Endpoints.MarkFailing(context.Background(), h.tenant, ep.GetId(), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	h.publish("ok", "a.b", []byte(`{}`))
	waitFor(t, 10*time.Second, "second delivery", func() bool { return h.deliveryStatus("ok", ep.GetId()) == "delivered" })
	rec, err := h.d.Endpoints.Endpoints.Get(context.Background(), h.tenant, ep.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if fs := rec.Endpoint.GetFailingSince(); fs != nil {
		t.Fatalf("failing_since %v after a successful delivery", fs.AsTime())
	}
}

// Two sources may send events with the same id (a provider's id, a hash
// of the same body, an id chosen by a client): both are delivered, the
// second as "<source>:<id>" so that subscribers keep both too.
func TestSameIDFromTwoSources(t *testing.T) {
	var second string
	h := newHarness(t, loopback, func(c *Config) {
		second = c.EventBindings[:len(c.EventBindings)-2] + "x"
		c.EventBindings += "," + second + ".#"
	})
	s := newSink(t, ok)
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	h.publish("shared-1", "a.b", []byte(`{"from":"first"}`))
	waitFor(t, 10*time.Second, "first delivery", func() bool { return h.deliveryStatus("shared-1", ep.GetId()) == "delivered" })

	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: "shared-1", Source: second, Type: "a.b", Tenant: h.tenant, Time: timestamppb.Now(),
		DataContentType: "application/json", Data: []byte(`{"from":"second"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.d.Publisher.Publish(context.Background(), rabbit.EventsExchange, cloudevent.RoutingKey(second, "a.b"), msg); err != nil {
		t.Fatal(err)
	}
	qualified := second + ":shared-1"
	waitFor(t, 10*time.Second, "second delivery", func() bool { return h.deliveryStatus(qualified, ep.GetId()) == "delivered" })
	got := map[string]string{}
	for _, r := range s.all() {
		got[r.header.Get("webhook-id")] = string(r.body)
	}
	if len(got) != 2 || got["shared-1"] != `{"from":"first"}` || got[qualified] != `{"from":"second"}` {
		t.Fatalf("deliveries by webhook-id: %v", got)
	}
}
