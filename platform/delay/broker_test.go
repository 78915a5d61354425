package delay

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
)

// TestExpiredMessageReturnsThroughNamedExchange runs a ladder on the real
// broker: a delayed message must come back to the target through the
// ladder's own exchange, never through the default exchange (which
// RabbitMQ 3.10 can report missing after a restart, stranding messages in
// the delay queues).
func TestExpiredMessageReturnsThroughNamedExchange(t *testing.T) {
	if testing.Short() {
		t.Skip("needs RabbitMQ")
	}
	conn, err := amqp.Dial(rabbittest.URL())
	if err != nil {
		t.Skipf("no broker: %v", err)
	}
	t.Cleanup(func() { conn.Close() }) // after the deletions below (LIFO)
	target := rabbittest.UniqueName(t, "target")
	l := Ladder{Target: target, Rungs: []time.Duration{200 * time.Millisecond}}
	wantExchange := target + ".delay.return"
	t.Cleanup(func() {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range append(append(l.Queues(), l.LegacyQueues()...), target, rabbit.DLQName(target)) {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(wantExchange, false, false)
	})

	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := rabbit.DeclareTopology(ch); err != nil {
		t.Fatal(err)
	}
	if err := rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: target}); err != nil {
		t.Fatal(err)
	}
	// A delay queue of an earlier release, dead-lettering through the
	// default exchange, must neither block Declare nor lose what it holds.
	legacy := l.LegacyQueues()[0]
	if err := rabbit.DeclareDelayQueue(ch, rabbit.DelayQueueSpec{Name: legacy, TTL: 200 * time.Millisecond, TargetKey: target}); err != nil {
		t.Fatal(err)
	}
	if err := l.Declare(ch); err != nil {
		t.Fatal(err)
	}
	// Declaring again is what every reconnect does: it must not conflict.
	if err := l.Declare(ch); err != nil {
		t.Fatalf("second Declare: %v", err)
	}

	// The broker refuses a redeclaration with other arguments, so this
	// passes only if the delay queue dead-letters through the exchange.
	check, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := rabbit.DeclareDelayQueue(check, rabbit.DelayQueueSpec{Name: l.Queue(200 * time.Millisecond), TTL: 200 * time.Millisecond, TargetExchange: wantExchange, TargetKey: target}); err != nil {
		t.Fatalf("the delay queue does not dead-letter to %s: %v", wantExchange, err)
	}
	check.Close()

	key := l.Key(time.Now().Add(300 * time.Millisecond))
	if key == target {
		t.Fatalf("Key picked the target, not a delay queue")
	}
	if err := ch.PublishWithContext(context.Background(), "", key, true, false, amqp.Publishing{Body: []byte("later")}); err != nil {
		t.Fatal(err)
	}
	if d := getWithin(t, ch, target, 30*time.Second); d.Exchange != wantExchange || d.RoutingKey != target || string(d.Body) != "later" {
		t.Fatalf("returned via exchange %q key %q body %q; want %q, %q, \"later\"", d.Exchange, d.RoutingKey, d.Body, wantExchange, target)
	}

	if err := ch.PublishWithContext(context.Background(), "", legacy, true, false, amqp.Publishing{Body: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	if d := getWithin(t, ch, target, 30*time.Second); string(d.Body) != "old" {
		t.Fatalf("from the legacy queue got %q, want \"old\"", d.Body)
	}
}

func getWithin(t *testing.T, ch *amqp.Channel, queue string, timeout time.Duration) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message in %s within %v", queue, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
