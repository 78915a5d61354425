package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
)

// The broker connection drops again and again while a backlog is being
// delivered: every event ends delivered or listed as a dead letter, and
// nothing is left in any queue.
//
// This guards against loss and strays under repeated drops; it does not
// reproduce the delivery-limit dead-lettering of returned messages (it
// passed on the code before the dead-letter consumer existed: the
// consumers ack most of what they take before each cut, so no one message
// is returned often enough). TestDeliveryLimitDeadLetterIsRevived covers
// what the dispatcher does with such a dead letter, given a broker's
// x-death.
func TestRepeatedBrokerDropsUnderBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	h := newHarness(t, loopback, nil)
	s := newSink(t, func(request) int { return http.StatusOK })
	// Ten endpoints make each event's fan-out ten confirmed publishes, so
	// the backlog is still being fanned out when the connection drops.
	var eps []string
	for range 10 {
		eps = append(eps, h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL}).GetId())
	}
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
	for _, run := range []func(context.Context) error{d.RunFanout, d.RunDeliveries, d.RunDeadLetters} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()

	// The backlog is published while the replica has no broker, and each
	// time it reconnects the connection drops again shortly after its
	// consumers took their first deliveries, more times than the queues'
	// delivery limit.
	proxy.Cut()
	waitFor(t, 10*time.Second, "the drop to be seen", func() bool { return conn.Check(context.Background()) != nil })
	const events = 500
	for i := range events {
		h.publish(fmt.Sprintf("evt-%d", i), "a.b", []byte(`{}`))
	}
	for range rabbit.DefaultDeliveryLimit + 5 {
		proxy.Restore()
		waitFor(t, 20*time.Second, "reconnect", func() bool { return conn.Check(context.Background()) == nil })
		time.Sleep(100 * time.Millisecond)
		proxy.Cut()
		waitFor(t, 10*time.Second, "the drop to be seen", func() bool { return conn.Check(context.Background()) != nil })
	}
	proxy.Restore()

	settled := func(id string, dls map[string]*dispatcherv1.DeadLetter) bool {
		if dls[id] != nil && dls[id].GetEndpointId() == "" {
			return true // the event itself
		}
		m := h.message(id)
		if len(m.GetDeliveries()) != len(eps) {
			return false
		}
		for _, d := range m.GetDeliveries() {
			// failed: dead-lettered, and listed (checked below).
			if d.GetStatus() != "delivered" && d.GetStatus() != "failed" {
				return false
			}
		}
		return true
	}
	waitFor(t, 120*time.Second, "every event delivered or dead-lettered", func() bool {
		dls := h.deadLetters()
		for i := range events {
			if !settled(fmt.Sprintf("evt-%d", i), dls) {
				return false
			}
		}
		return true
	})
	admin := adminChannel(t)
	waitFor(t, 20*time.Second, "empty queues", func() bool {
		for _, q := range h.cfg.Queues().All() {
			if queueDepth(t, admin, q) != 0 {
				return false
			}
		}
		return true
	})
	// Every failed delivery is listed.
	dls := h.deadLetters()
	for i := range events {
		id := fmt.Sprintf("evt-%d", i)
		for _, d := range h.message(id).GetDeliveries() {
			if d.GetStatus() == "failed" && dls[id] == nil {
				t.Errorf("delivery of %s to %s failed but is not listed", id, d.GetEndpointId())
			}
		}
	}
	t.Logf("%d requests for %d events to %d endpoints, %d dead letters", len(s.all()), events, len(eps), len(dls))
}
