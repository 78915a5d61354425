package rabbit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookyard/hookyard/platform/trace"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Handler processes one delivery. It must settle the delivery itself with
// d.Ack, d.Nack or d.Reject; an unsettled delivery stays unacknowledged
// until its channel closes and is then redelivered. Acking a delivery whose
// channel has died fails harmlessly: the broker redelivers it elsewhere, so
// handlers must be idempotent.
//
// The context is not cancelled when the consumer starts shutting down (see
// ConsumeConfig.ShutdownGrace), so an in-flight handler can finish its work
// and ack instead of leaving a half-done side effect to be redone.
//
// A panicking handler is not recovered: it crashes the process, the broker
// redelivers, and the queue's delivery limit eventually dead-letters a
// message that always panics.
type Handler func(ctx context.Context, d amqp.Delivery)

// ConsumeConfig tunes Conn.ConsumeWithConfig.
type ConsumeConfig struct {
	// Prefetch is the QoS prefetch count: how many unacknowledged
	// deliveries the broker sends at once (default 1).
	Prefetch int

	// Concurrency is how many handlers run at once (default Prefetch).
	// More than Prefetch is pointless: the broker never has more
	// deliveries outstanding.
	Concurrency int

	// Tag is the consumer tag prefix shown in the management UI; a
	// per-subscription suffix is added. Empty means "hookyard-<queue>".
	Tag string

	// ShutdownGrace bounds how long in-flight handlers may run after ctx
	// ends; then their context is cancelled and Consume still waits for
	// them to return. Zero waits for them without cancelling.
	ShutdownGrace time.Duration
}

// Consume consumes queue with manual acknowledgements, running up to
// prefetch handlers concurrently. See ConsumeWithConfig.
func (c *Conn) Consume(ctx context.Context, queue string, prefetch int, handler Handler) error {
	return c.ConsumeWithConfig(ctx, queue, ConsumeConfig{Prefetch: prefetch}, handler)
}

// ConsumeWithConfig consumes queue until ctx ends. It subscribes again
// whenever the channel or connection is lost (the broker redelivers what was
// unacknowledged), backing off while the subscription keeps failing, for
// instance because the queue does not exist yet.
//
// When ctx ends it shuts down gracefully: it cancels the subscription so no
// new deliveries arrive, hands prefetched but unstarted deliveries back to
// the broker (nack with requeue), waits for running handlers, and only then
// closes the channel, so that their acks still reach the broker. It returns
// nil after a graceful stop and an error only for an invalid call.
func (c *Conn) ConsumeWithConfig(ctx context.Context, queue string, cfg ConsumeConfig, handler Handler) error {
	if handler == nil {
		return errors.New("rabbit: consume: nil handler")
	}
	if queue == "" {
		return errors.New("rabbit: consume: empty queue name")
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 1
	}
	if cfg.Concurrency <= 0 || cfg.Concurrency > cfg.Prefetch {
		cfg.Concurrency = cfg.Prefetch
	}

	s := &consumer{
		conn:    c,
		queue:   queue,
		cfg:     cfg,
		handler: handler,
		work:    make(chan amqp.Delivery),
	}
	// Handlers see ctx's values but not its cancellation; hcancel ends
	// them once the shutdown grace runs out.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	s.hctx = hctx

	attempt := 0
	var last *amqp.Channel
	for {
		ch, subscribed, err := s.session(ctx)
		if ctx.Err() != nil {
			last = ch
			break
		}
		if ch != nil {
			_ = ch.Close()
		}
		if subscribed {
			attempt = 0
		}
		delay := backoff(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff)
		attempt++
		c.log.Warn("rabbit consumer interrupted", "queue", queue, "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			break
		}
	}

	close(s.work) // the handlers' goroutines end once idle
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	if cfg.ShutdownGrace > 0 {
		t := time.NewTimer(cfg.ShutdownGrace)
		select {
		case <-done:
		case <-t.C:
			hcancel()
			<-done
		}
		t.Stop()
	} else {
		<-done
	}
	if last != nil {
		_ = last.Close()
	}
	return nil
}

type consumer struct {
	conn    *Conn
	queue   string
	cfg     ConsumeConfig
	handler Handler
	hctx    context.Context
	// work hands deliveries to the handlers' goroutines: at most
	// Concurrency, started as needed and kept, so that a delivery does
	// not pay for a new goroutine and for growing its stack again.
	work    chan amqp.Delivery
	workers int
	wg      sync.WaitGroup
	seq     atomic.Uint64
}

// handle runs the handler on deliveries until work is closed.
func (s *consumer) handle() {
	defer s.wg.Done()
	for d := range s.work {
		hctx, end := trace.StartConsume(s.hctx, s.queue, d)
		s.handler(hctx, d)
		end()
	}
}

// dispatch hands d to an idle handler goroutine, starting one if none is
// idle and fewer than Concurrency run, or waits for one to be free. It
// reports false if ctx ended first.
func (s *consumer) dispatch(ctx context.Context, d amqp.Delivery) bool {
	select {
	case s.work <- d:
		return true
	default:
	}
	if s.workers < s.cfg.Concurrency {
		s.workers++
		s.wg.Add(1)
		go s.handle()
	}
	select {
	case s.work <- d:
		return true
	case <-ctx.Done():
		return false
	}
}

// session subscribes once and dispatches deliveries until the channel dies
// or ctx ends. It returns the channel (still open if ctx ended, so that
// in-flight handlers can ack) and whether the subscription was established.
func (s *consumer) session(ctx context.Context) (*amqp.Channel, bool, error) {
	ch, err := s.conn.Channel(ctx)
	if err != nil {
		return nil, false, err
	}
	if err := ch.Qos(s.cfg.Prefetch, 0, false); err != nil {
		return ch, false, fmt.Errorf("rabbit: consume %s: set prefetch: %w", s.queue, err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	prefix := s.cfg.Tag
	if prefix == "" {
		prefix = "hookyard-" + s.queue
	}
	tag := fmt.Sprintf("%s-%d", prefix, s.seq.Add(1))
	deliveries, err := ch.Consume(s.queue, tag, false, false, false, false, nil)
	if err != nil {
		return ch, false, fmt.Errorf("rabbit: consume %s: %w", s.queue, err)
	}

	for {
		select {
		case <-ctx.Done():
			s.stop(ch, tag, deliveries)
			return ch, true, nil
		case d, ok := <-deliveries:
			if !ok {
				// Either the channel died or the broker cancelled the
				// subscription (queue deleted); only the first has a reason.
				var cause error = errors.New("subscription cancelled")
				select {
				case cerr, ok := <-closed:
					if ok && cerr != nil {
						cause = cerr
					} else {
						cause = errors.New("channel closed")
					}
				case <-time.After(100 * time.Millisecond):
				}
				return ch, true, fmt.Errorf("rabbit: consume %s: %w", s.queue, cause)
			}
			if ctx.Err() != nil {
				_ = d.Nack(false, true)
				continue
			}
			if !s.dispatch(ctx, d) {
				_ = d.Nack(false, true)
			}
		}
	}
}

// stop cancels the subscription and returns prefetched deliveries that no
// handler has started to the broker. The channel stays open for the acks of
// running handlers.
func (s *consumer) stop(ch *amqp.Channel, tag string, deliveries <-chan amqp.Delivery) {
	if err := ch.Cancel(tag, false); err != nil {
		return // the channel is gone; the broker requeues on its own
	}
	for d := range deliveries {
		_ = d.Nack(false, true)
	}
}
