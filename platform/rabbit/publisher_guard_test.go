package rabbit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A field that AMQP cannot encode (a short string over 255 bytes) must fail
// that one publish, not the connection every other publish shares.
func TestPublishUnencodableFieldFailsOnlyThatCall(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})

	c := dialTest(t, amqpURL(), Config{})
	waitReady(t, c)
	p := NewPublisher(c, PublisherConfig{Channels: 1})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	gen := c.Generation()

	long := strings.Repeat("x", 256)
	bad := []struct {
		name     string
		exchange string
		key      string
		msg      amqp.Publishing
	}{
		{"message id", EventsExchange, key, amqp.Publishing{MessageId: long}},
		{"routing key", EventsExchange, key + long, amqp.Publishing{}},
		{"type", EventsExchange, key, amqp.Publishing{Type: long}},
		{"correlation id", EventsExchange, key, amqp.Publishing{CorrelationId: long}},
		{"content type", EventsExchange, key, amqp.Publishing{ContentType: long}},
		{"header name", EventsExchange, key, amqp.Publishing{Headers: amqp.Table{long: "v"}}},
		{"nested header name", EventsExchange, key, amqp.Publishing{Headers: amqp.Table{"h": amqp.Table{long: "v"}}}},
		{"header type", EventsExchange, key, amqp.Publishing{Headers: amqp.Table{"h": struct{}{}}}},
		{"exchange", long, key, amqp.Publishing{}},
	}
	for _, b := range bad {
		err := p.Publish(ctx, b.exchange, b.key, b.msg)
		if !errors.Is(err, ErrUnencodable) {
			t.Errorf("%s over the limit: err = %v, want ErrUnencodable", b.name, err)
		}
		// The same connection and channel keep working.
		if err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{MessageId: "ok-" + b.name, Body: []byte("{}")}); err != nil {
			t.Fatalf("publish after the %s case: %v", b.name, err)
		}
	}
	if g := c.Generation(); g != gen {
		t.Fatalf("connection generation %d -> %d: the bad publish closed the shared connection", gen, g)
	}
	a.waitCount(q, len(bad), 10*time.Second)

	// 255 bytes is the limit, not over it.
	if err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{MessageId: long[:255]}); err != nil {
		t.Fatalf("255-byte message id: %v", err)
	}
}

// A publish through the default exchange to a queue that does not exist is
// dropped by the broker and still confirmed; it must be an error, and the
// publisher must redeclare the topology so that the next try succeeds.
func TestPublishToMissingQueueIsReturnedAndRedeclared(t *testing.T) {
	a := newAdmin(t)
	q := uniqueName(t, "q")
	a.deleteLater(q, DLQName(q))

	declared := make(chan struct{}, 16)
	c := dialTest(t, amqpURL(), Config{Setup: func(_ context.Context, ch *amqp.Channel) error {
		select {
		case declared <- struct{}{}:
		default:
		}
		return nil
	}})
	waitReady(t, c)
	<-declared
	p := NewPublisher(c, PublisherConfig{Channels: 1})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	err := p.Publish(ctx, "", q, amqp.Publishing{MessageId: "m1", Body: []byte("x")})
	if !errors.Is(err, ErrReturned) {
		t.Fatalf("publish to missing queue %s: err = %v, want ErrReturned", q, err)
	}
	select {
	case <-declared:
	case <-time.After(10 * time.Second):
		t.Fatal("the topology was not declared again after a return")
	}

	// Once the queue exists, the same publish is confirmed and arrives.
	if err := DeclareQueue(a.channel(), QueueSpec{Name: q}); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "", q, amqp.Publishing{MessageId: "m1", Body: []byte("x")}); err != nil {
		t.Fatalf("publish after declare: %v", err)
	}
	a.waitCount(q, 1, 10*time.Second)

	// Returns are told apart per publish: concurrent routed and returned
	// publishes on one channel each get their own outcome.
	missing := uniqueName(t, "missing")
	errs := make(chan error, 200)
	for i := range 200 {
		go func() {
			if i%2 == 0 {
				errs <- p.Publish(ctx, "", q, amqp.Publishing{MessageId: "ok", Body: []byte("x")})
			} else {
				err := p.Publish(ctx, "", missing, amqp.Publishing{MessageId: "ok", Body: []byte("x")})
				if errors.Is(err, ErrReturned) {
					err = nil
				} else {
					err = errors.New("publish to a missing queue did not fail with ErrReturned")
				}
				errs <- err
			}
		}()
	}
	for range 200 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	a.waitCount(q, 101, 10*time.Second)
}

// When a channel dies the library closes its return channel; a publish
// confirmed just before must still get its answer (and not spin on the
// closed channel), including a return buffered before the close.
func TestTakeReturnAfterChannelClosed(t *testing.T) {
	pc := &pubChannel{returns: make(chan amqp.Return, 2), returned: make(map[uint64]returned)}
	pc.returns <- amqp.Return{ReplyCode: amqp.NoRoute, Headers: amqp.Table{HeaderPublishTag: int64(7)}}
	close(pc.returns)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, ok := pc.takeReturn(6); ok {
			t.Error("tag 6 was not returned")
		}
		if r, ok := pc.takeReturn(7); !ok || r.ReplyCode != amqp.NoRoute {
			t.Error("the buffered return of tag 7 was lost")
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("takeReturn spins on a closed return channel")
	}
}
