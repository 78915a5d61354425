package rabbit

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestDeclareIsIdempotent(t *testing.T) {
	a := newAdmin(t)
	spec := QueueSpec{Name: uniqueName(t, "q"), Bindings: []string{"test.idempotent.#"}}
	for range 2 {
		a.declare(spec)
	}
	if err := DeclareDelayQueue(a.channel(), DelayQueueSpec{Name: spec.Name + ".delay", TTL: time.Second, TargetKey: spec.Name}); err != nil {
		t.Fatal(err)
	}
	if err := DeclareDelayQueue(a.channel(), DelayQueueSpec{Name: spec.Name + ".delay", TTL: time.Second, TargetKey: spec.Name}); err != nil {
		t.Fatal(err)
	}
	a.deleteLater(spec.Name + ".delay")
}

func TestDeclareRejectsBadSpecs(t *testing.T) {
	a := newAdmin(t)
	if err := DeclareQueue(a.channel(), QueueSpec{}); err == nil {
		t.Fatal("empty queue name accepted")
	}
	if err := DeclareDelayQueue(a.channel(), DelayQueueSpec{Name: "x"}); err == nil {
		t.Fatal("delay queue without target accepted")
	}
	if err := DeclareDelayQueue(a.channel(), DelayQueueSpec{Name: "x", TargetKey: "y", TTL: -1}); err == nil {
		t.Fatal("negative TTL accepted")
	}
}

func TestUnroutableEventsAreKept(t *testing.T) {
	a := newAdmin(t)
	// The default topology as production declares it, then a private one
	// with the same shape: a catch-all binding that another consumer (a
	// dispatcher) may have on the shared exchange would route the test's
	// event away from the unrouted queue.
	if err := DeclareTopology(a.channel()); err != nil {
		t.Fatal(err)
	}
	topo := Topology{Events: uniqueName(t, "events"), Unrouted: uniqueName(t, "unrouted")}
	if err := topo.Declare(a.channel()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ch := a.channel()
		_, _ = ch.QueueDelete(topo.Unrouted, false, false, false)
		_ = ch.ExchangeDelete(topo.Events, false, false)
		_ = ch.ExchangeDelete(topo.Unrouted, false, false)
	})
	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{})
	defer p.Close()

	// A routing key no queue is bound to; the message id finds it again
	// among other tests' unroutable messages.
	key, id := uniqueName(t, "unbound"), uniqueName(t, "id")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Publish(ctx, topo.Events, key, amqp.Publishing{MessageId: id, Body: []byte("kept")}); err != nil {
		t.Fatal(err)
	}

	// Look through hookyard.unrouted without disturbing other messages for
	// long: hold them unacked, ack ours only, and let closing the channel
	// hand the rest back.
	ch, err := a.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Qos(5000, 0, false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(topo.Unrouted, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case d := <-deliveries:
			if d.MessageId != id {
				continue
			}
			if d.RoutingKey != key || d.Exchange != topo.Events || string(d.Body) != "kept" {
				t.Fatalf("unrouted message: exchange %q key %q body %q", d.Exchange, d.RoutingKey, d.Body)
			}
			if err := d.Ack(false); err != nil {
				t.Fatal(err)
			}
			return
		case <-timeout:
			t.Fatalf("message %s not found in %s", id, topo.Unrouted)
		}
	}
}

func TestRejectedMessageGoesToDLQ(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})
	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{MessageId: "poison", Body: []byte("bad")}); err != nil {
		t.Fatal(err)
	}
	d, ok := a.get(q, 2*time.Second)
	if !ok {
		t.Fatal("message not in queue")
	}
	if err := d.Reject(false); err != nil {
		t.Fatal(err)
	}

	dl, ok := a.get(DLQName(q), 5*time.Second)
	if !ok {
		t.Fatalf("rejected message not in %s", DLQName(q))
	}
	if dl.MessageId != "poison" || string(dl.Body) != "bad" {
		t.Fatalf("dead letter: id %q body %q", dl.MessageId, dl.Body)
	}
	assertDeath(t, dl, q, "rejected")
	dl.Ack(false)
	a.waitCount(q, 0, time.Second)
}

func TestDeliveryLimitDeadLetters(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}, DeliveryLimit: 2})
	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{MessageId: "loop"}); err != nil {
		t.Fatal(err)
	}

	// Keep requeueing: the broker must stop the loop after the limit.
	deliveries := 0
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d, ok, err := a.channel().Get(q, false)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if a.count(DLQName(q)) == 1 {
				break
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		deliveries++
		if deliveries > 10 {
			t.Fatal("delivery limit not enforced")
		}
		d.Nack(false, true)
	}
	dl, ok := a.get(DLQName(q), 5*time.Second)
	if !ok {
		t.Fatal("message not dead-lettered after its delivery limit")
	}
	if deliveries != 3 {
		t.Errorf("delivered %d times, want 3 (limit 2 allows two redeliveries)", deliveries)
	}
	assertDeath(t, dl, q, "delivery_limit")
	dl.Ack(false)
}

func TestDelayQueue(t *testing.T) {
	a := newAdmin(t)
	target := uniqueName(t, "target")
	a.declare(QueueSpec{Name: target})
	delay := target + ".delay"
	if err := DeclareDelayQueue(a.channel(), DelayQueueSpec{Name: delay, TTL: 300 * time.Millisecond, TargetKey: target}); err != nil {
		t.Fatal(err)
	}
	a.deleteLater(delay)
	perMsg := target + ".delay-per-message"
	if err := DeclareDelayQueue(a.channel(), DelayQueueSpec{Name: perMsg, TargetKey: target, Classic: true}); err != nil {
		t.Fatal(err)
	}
	a.deleteLater(perMsg)

	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, tc := range []struct {
		queue, expiration string
	}{{delay, ""}, {perMsg, "300"}} {
		start := time.Now()
		if err := p.Publish(ctx, "", tc.queue, amqp.Publishing{MessageId: tc.queue, Expiration: tc.expiration}); err != nil {
			t.Fatal(err)
		}
		d, ok := a.get(target, 5*time.Second)
		if !ok {
			t.Fatalf("%s: message never left the delay queue", tc.queue)
		}
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Fatalf("%s: message arrived after %v, before its delay", tc.queue, took)
		}
		if d.MessageId != tc.queue {
			t.Fatalf("got message %q", d.MessageId)
		}
		assertDeath(t, d, tc.queue, "expired")
		d.Ack(false)
	}
}

// assertDeath checks the x-death header the broker adds on dead-lettering.
func assertDeath(t *testing.T, d amqp.Delivery, queue, reason string) {
	t.Helper()
	deaths, _ := d.Headers["x-death"].([]any)
	for _, raw := range deaths {
		death, _ := raw.(amqp.Table)
		if death["queue"] == queue && death["reason"] == reason {
			return
		}
	}
	t.Fatalf("no x-death entry for queue %s reason %s: %v", queue, reason, d.Headers["x-death"])
}
