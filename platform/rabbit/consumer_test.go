package rabbit

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func publishN(t *testing.T, p *Publisher, key string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range n {
		if err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{MessageId: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// Handlers run prefetch at a time, on goroutines that are kept rather
// than one new goroutine per delivery (whose stack grows again each
// time): 20 deliveries at a prefetch of 4 use 4 goroutines.
func TestConsumeRunsPrefetchHandlersConcurrently(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})
	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{})
	defer p.Close()
	publishN(t, p, key, 20)

	const prefetch = 4
	var running, peak, handled atomic.Int64
	var mu sync.Mutex
	ids := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, q, prefetch, func(_ context.Context, d amqp.Delivery) {
			mu.Lock()
			ids[goid()] = true
			mu.Unlock()
			n := running.Add(1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
			running.Add(-1)
			d.Ack(false)
			handled.Add(1)
		})
	}()
	eventually(t, 10*time.Second, "all messages handled", func() bool { return handled.Load() == 20 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := peak.Load(); got != prefetch {
		t.Fatalf("peak concurrent handlers = %d, want %d", got, prefetch)
	}
	if len(ids) > prefetch {
		t.Fatalf("20 deliveries ran on %d goroutines, want at most %d", len(ids), prefetch)
	}
	a.waitCount(q, 0, time.Second)
}

// goid is the id of the calling goroutine.
func goid() string {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	f := strings.Fields(string(b))
	return f[1] // "goroutine <id> [running]:"
}

func TestConsumeGracefulStop(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})
	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{})
	defer p.Close()
	// More messages than the consumer may hold: 3 in handlers, 7 waiting.
	publishN(t, p, key, 10)

	const prefetch = 3
	var started, finished atomic.Int64
	var handlerCtxErr atomic.Value
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, q, prefetch, func(hctx context.Context, d amqp.Delivery) {
			started.Add(1)
			<-release
			if err := hctx.Err(); err != nil {
				handlerCtxErr.Store(err)
			}
			if err := d.Ack(false); err != nil {
				t.Errorf("ack after shutdown began: %v", err)
			}
			finished.Add(1)
		})
	}()
	eventually(t, 5*time.Second, "handlers to start", func() bool { return started.Load() == prefetch })

	cancel()
	select {
	case <-done:
		t.Fatal("Consume returned while handlers were running")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Consume did not return after handlers finished")
	}
	if s, f := started.Load(), finished.Load(); s != prefetch || f != prefetch {
		t.Fatalf("started %d finished %d, want %d each: no new work after stop", s, f, prefetch)
	}
	if err := handlerCtxErr.Load(); err != nil {
		t.Fatalf("handler context cancelled on shutdown: %v", err)
	}
	// The in-flight messages were acked; the rest are back in the queue.
	a.waitCount(q, 10-prefetch, 3*time.Second)
}

func TestConsumeShutdownGraceCancelsHandlers(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})
	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{})
	defer p.Close()
	publishN(t, p, key, 1)

	var started atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.ConsumeWithConfig(ctx, q, ConsumeConfig{Prefetch: 1, ShutdownGrace: 200 * time.Millisecond},
			func(hctx context.Context, d amqp.Delivery) {
				started.Store(true)
				<-hctx.Done() // a stuck handler that honours its context
				d.Nack(false, true)
			})
	}()
	eventually(t, 5*time.Second, "handler to start", started.Load)
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Consume ignored ShutdownGrace")
	}
	a.waitCount(q, 1, 3*time.Second)
}

func TestConsumeResubscribesAfterOutage(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})

	px := newProxy(t)
	c := dialTest(t, px.URL(), Config{})
	waitReady(t, c)
	// Publish on a direct connection, unaffected by the proxy.
	direct := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(direct, PublisherConfig{})
	defer p.Close()

	var mu sync.Mutex
	got := make(map[string]bool)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, q, 10, func(_ context.Context, d amqp.Delivery) {
			mu.Lock()
			got[d.MessageId] = true
			mu.Unlock()
			d.Ack(false)
		})
	}()
	has := func(id string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return got[id] }
	}

	pub := func(id string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{MessageId: id}); err != nil {
			t.Fatal(err)
		}
	}
	pub("before")
	eventually(t, 5*time.Second, "message before outage", has("before"))

	px.Cut()
	eventually(t, 2*time.Second, "outage detected", func() bool { return c.Check(context.Background()) != nil })
	pub("during")
	time.Sleep(200 * time.Millisecond)
	if has("during")() {
		t.Fatal("consumed through a cut connection")
	}
	px.Restore()
	eventually(t, 10*time.Second, "message published during outage", has("during"))
	pub("after")
	eventually(t, 5*time.Second, "message after outage", has("after"))

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestConsumeWaitsForMissingQueue(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	c := dialTest(t, amqpURL(), Config{})

	var handled atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, q, 1, func(_ context.Context, d amqp.Delivery) {
			handled.Add(1)
			d.Ack(false)
		})
	}()
	// The subscription fails (404) until the queue exists, then succeeds.
	time.Sleep(300 * time.Millisecond)
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})
	p := NewPublisher(c, PublisherConfig{})
	defer p.Close()
	publishN(t, p, key, 1)
	eventually(t, 10*time.Second, "message handled", func() bool { return handled.Load() == 1 })
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("failed subscriptions took the connection down: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
