package rabbit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestPublishPipelinedConfirms(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})

	c := dialTest(t, amqpURL(), Config{})
	waitReady(t, c)
	// One channel: any concurrency seen below is confirms pipelined on it.
	p := NewPublisher(c, PublisherConfig{Channels: 1})
	defer p.Close()

	const n = 2000
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{
				MessageId: fmt.Sprint(i),
				Body:      []byte(`{"n":` + fmt.Sprint(i) + `}`),
			})
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	wg.Wait()
	t.Logf("%d confirmed publishes in %v, peak %d outstanding on one channel", n, time.Since(start), p.peak.Load())
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d publishes failed, first: %v", f, firstErr.Load())
	}
	if peak := p.peak.Load(); peak < 2 {
		t.Fatalf("peak outstanding confirms = %d: publishes were serialised", peak)
	}
	a.waitCount(q, n, 5*time.Second)

	d, ok := a.get(q, time.Second)
	if !ok {
		t.Fatal("no message")
	}
	if d.DeliveryMode != amqp.Persistent {
		t.Fatalf("delivery mode = %d, want persistent", d.DeliveryMode)
	}
}

func TestPublishNackIsAnError(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	// reject-publish (set by DeclareQueue) makes a full queue nack.
	a.declare(QueueSpec{Name: q, Bindings: []string{key}, Args: amqp.Table{amqp.QueueMaxLenArg: int64(1)}})

	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{Channels: 1})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Quorum queues apply the limit once it is exceeded, so the first
	// publishes may be accepted; one of the next few must be nacked.
	var err error
	accepted := 0
	for i := 0; i < 5; i++ {
		if err = p.Publish(ctx, EventsExchange, key, amqp.Publishing{Body: []byte(fmt.Sprint(i))}); err != nil {
			break
		}
		accepted++
	}
	if !errors.Is(err, ErrNacked) {
		t.Fatalf("publish to full queue = %v after %d accepted, want ErrNacked", err, accepted)
	}
	t.Logf("accepted %d before nack", accepted)
	// The channel survives a nack.
	a.channel().QueuePurge(q, false)
	if err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{Body: []byte("again")}); err != nil {
		t.Fatalf("publish after nack and purge: %v", err)
	}
	a.waitCount(q, 1, 2*time.Second)
}

func TestPublishAfterChannelError(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})

	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{Channels: 1})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The broker closes the channel (404) instead of confirming.
	err := p.Publish(ctx, uniqueName(t, "no-such-exchange"), "k", amqp.Publishing{Body: []byte("x")})
	if err == nil {
		t.Fatal("publish to a missing exchange reported success")
	}
	t.Logf("missing exchange: %v", err)
	if err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{Body: []byte("y")}); err != nil {
		t.Fatalf("publish after channel error: %v", err)
	}
	a.waitCount(q, 1, 2*time.Second)
	if err := c.Check(ctx); err != nil {
		t.Fatalf("a channel error must not take the connection down: %v", err)
	}
}

func TestPublishAcrossOutage(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})

	px := newProxy(t)
	c := dialTest(t, px.URL(), Config{})
	waitReady(t, c)
	p := NewPublisher(c, PublisherConfig{})
	defer p.Close()
	publish := func(timeout time.Duration, body string) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return p.Publish(ctx, EventsExchange, key, amqp.Publishing{Body: []byte(body)})
	}

	if err := publish(5*time.Second, "before"); err != nil {
		t.Fatalf("publish before outage: %v", err)
	}

	px.Cut()
	eventually(t, 2*time.Second, "Check to fail", func() bool { return c.Check(context.Background()) != nil })
	if err := publish(time.Second, "during"); err == nil {
		t.Fatal("publish during outage reported success")
	} else {
		t.Logf("publish during outage: %v", err)
	}

	px.Restore()
	waitReady(t, c)
	if err := publish(5*time.Second, "after"); err != nil {
		t.Fatalf("publish after outage: %v", err)
	}

	a.waitCount(q, 2, 3*time.Second)
	for _, want := range []string{"before", "after"} {
		d, ok := a.get(q, time.Second)
		if !ok || string(d.Body) != want {
			t.Fatalf("got %q (ok %v), want %q", d.Body, ok, want)
		}
		d.Ack(false)
	}
}

// TestPublishNeverConfirmsLostMessages cuts the connection while many
// publishes are in flight: every publish that returned nil must be in the
// queue afterwards.
func TestPublishNeverConfirmsLostMessages(t *testing.T) {
	a := newAdmin(t)
	q, key := uniqueName(t, "q"), uniqueName(t, "key")
	a.declare(QueueSpec{Name: q, Bindings: []string{key}})

	px := newProxy(t)
	c := dialTest(t, px.URL(), Config{})
	waitReady(t, c)
	p := NewPublisher(c, PublisherConfig{Channels: 2})
	defer p.Close()

	stop := make(chan struct{})
	var mu sync.Mutex
	acked := make(map[string]bool)
	var failures atomic.Int64
	var wg sync.WaitGroup
	var seq atomic.Int64
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprint(seq.Add(1))
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{MessageId: id})
				cancel()
				if err != nil {
					failures.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	px.Cut()
	time.Sleep(time.Second) // longer than a publish may wait
	px.Restore()
	waitReady(t, c)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	if failures.Load() == 0 {
		t.Fatal("no publish failed although the connection was cut")
	}
	t.Logf("%d acked, %d failed, %d attempted", len(acked), failures.Load(), seq.Load())

	// Drain the queue and check every acked id arrived.
	deliveries, err := a.channel().Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool)
	deadline := time.After(10 * time.Second)
drain:
	for {
		select {
		case d := <-deliveries:
			seen[d.MessageId] = true
		case <-time.After(500 * time.Millisecond):
			break drain
		case <-deadline:
			break drain
		}
	}
	for id := range acked {
		if !seen[id] {
			t.Fatalf("message %s was confirmed but is not in the queue", id)
		}
	}
}

func TestPublisherClosed(t *testing.T) {
	c := dialTest(t, amqpURL(), Config{})
	p := NewPublisher(c, PublisherConfig{})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	err := p.Publish(context.Background(), EventsExchange, "x", amqp.Publishing{})
	if !errors.Is(err, ErrPublisherClosed) {
		t.Fatalf("Publish after Close = %v", err)
	}
}

// BenchmarkPublishConfirm measures the raw broker-confirm ceiling: parallel
// persistent publishes, each waiting for its own confirm, into a quorum
// queue. Run with -cpu and -benchtime to vary the load, e.g.
//
//	go test -run=NONE -bench=PublishConfirm -benchtime=20000x ./rabbit/
func BenchmarkPublishConfirm(b *testing.B) {
	for _, size := range []int{256, 4096} {
		b.Run(fmt.Sprintf("body=%d", size), func(b *testing.B) {
			a := newAdmin(b)
			q, key := uniqueName(b, "q"), uniqueName(b, "key")
			a.declare(QueueSpec{Name: q, Bindings: []string{key}})
			c := dialTest(b, amqpURL(), Config{})
			waitReady(b, c)
			p := NewPublisher(c, PublisherConfig{})
			defer p.Close()
			body := make([]byte, size)
			ctx := context.Background()

			b.SetBytes(int64(size))
			b.SetParallelism(32) // 32 publishers per CPU keep the pipeline full
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := p.Publish(ctx, EventsExchange, key, amqp.Publishing{Body: body}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			// Purge before the queue is deleted; deleting a long quorum
			// queue is slower.
			if _, err := a.channel().QueuePurge(q, false); err != nil {
				b.Logf("purge: %v", err)
			}
		})
	}
}
