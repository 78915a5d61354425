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

// Errors reported by Publisher. A Publish that returns any error may or may
// not have reached the queue; callers that must not lose the message retry,
// and consumers tolerate the resulting duplicate.
var (
	// ErrNacked means the broker refused the message (for instance a full
	// queue with x-overflow=reject-publish, or an internal error).
	ErrNacked = errors.New("rabbit: publish nacked by broker")
	// ErrUnconfirmed means the channel or connection closed before the
	// broker confirmed the message.
	ErrUnconfirmed = errors.New("rabbit: publish not confirmed before channel closed")
	// ErrPublisherClosed is returned after Publisher.Close.
	ErrPublisherClosed = errors.New("rabbit: publisher closed")
	// ErrUnencodable means the message cannot be put into an AMQP frame (a
	// name or property over 255 bytes, a header of an unsupported type).
	// It is the caller's error and is detected before anything is sent.
	ErrUnencodable = errors.New("rabbit: message cannot be encoded")
	// ErrReturned means the broker returned the message as unroutable: the
	// exchange had no queue for its routing key (for a task, its queue is
	// missing). Nothing was stored.
	ErrReturned = errors.New("rabbit: publish returned unroutable")
)

// DefaultPublisherChannels is the channel pool size used when
// PublisherConfig.Channels is zero.
const DefaultPublisherChannels = 4

// HeaderPublishTag is the header Publish sets on every message: the
// message's delivery tag on its publishing channel. A message the broker
// returns as unroutable comes back with its headers, and the tag is what
// tells which of many pipelined publishes it was. Consumers may ignore it.
const HeaderPublishTag = "x-publish-tag"

// maxChannelInflight bounds the publishes waiting for a confirm on one
// channel. Every one of them may be returned, and the library hands returns
// over on a buffered Go channel that must never fill up (a full one would
// stall the connection's reader), so the buffer is sized from this bound.
const maxChannelInflight = 1024

// PublisherConfig tunes a Publisher.
type PublisherConfig struct {
	// Channels is the number of confirm-mode channels publishes are spread
	// over (default DefaultPublisherChannels). A single channel already
	// pipelines any number of outstanding confirms; several channels only
	// spread frame encoding and broker-side channel work over more cores.
	Channels int
}

// Publisher publishes persistent messages and waits for publisher confirms.
//
// Publish is safe for concurrent use and pipelined: a call holds a channel
// only while its frames are written, then waits for its own confirm, so many
// calls share one channel with many confirms outstanding. The broker batches
// confirms of concurrent publishes into one fsync; this is what makes
// confirmed publishing fast.
type Publisher struct {
	conn   *Conn
	slots  []*pubSlot
	next   atomic.Uint64
	closed atomic.Bool

	inflight atomic.Int64
	peak     atomic.Int64 // highest inflight seen; lets tests prove pipelining
}

// pubSlot owns one confirm-mode channel, re-opened lazily after it dies.
// lock is a one-token semaphore instead of a mutex so that waiting for it
// (which may include waiting for a reconnect) honours the caller's context.
type pubSlot struct {
	lock chan struct{}
	ch   *pubChannel
	// cur is ch, for publishes that find it open without taking lock.
	cur atomic.Pointer[pubChannel]
}

type pubChannel struct {
	ch       *amqp.Channel
	conn     *Conn
	closeErr atomic.Pointer[amqp.Error]

	// pubMu serialises publishes so that the next delivery tag is known
	// before the frame is sent (the library serialises frames anyway).
	pubMu sync.Mutex
	seq   uint64

	// inflight holds one token per publish awaiting its confirm.
	inflight chan struct{}
	// returns receives the broker's basic.return frames. The broker sends a
	// message's return before its confirm, and the library delivers both
	// from one goroutine in order, so by the time a publish's confirm
	// arrives its return is in this buffer or already moved to returned.
	returns  chan amqp.Return
	retMu    sync.Mutex
	returned map[uint64]returned
}

// returned is a return not yet claimed by its publish.
type returned struct {
	r  amqp.Return
	at time.Time
}

// staleReturn is when a return nobody claimed is dropped: its publish
// stopped waiting (its context ended) before the confirm. A publish still
// waiting claims its return at once, because the confirm follows it.
const staleReturn = time.Minute

// takeReturn reports whether the publish with tag was returned.
func (pc *pubChannel) takeReturn(tag uint64) (amqp.Return, bool) {
	pc.retMu.Lock()
	defer pc.retMu.Unlock()
	now := time.Now()
	for drained := false; !drained; {
		select {
		case r, open := <-pc.returns:
			if !open {
				// The channel died; the library closed the Go channel.
				// A nil channel is never ready, so the loop ends.
				pc.returns = nil
				continue
			}
			if t, ok := publishTag(r.Headers); ok {
				pc.returned[t] = returned{r: r, at: now}
			}
		default:
			drained = true
		}
	}
	r, ok := pc.returned[tag]
	delete(pc.returned, tag)
	if len(pc.returned) > 64 {
		for t, x := range pc.returned {
			if now.Sub(x.at) > staleReturn {
				delete(pc.returned, t)
			}
		}
	}
	return r.r, ok
}

func publishTag(h amqp.Table) (uint64, bool) {
	switch v := h[HeaderPublishTag].(type) {
	case int64:
		return uint64(v), true
	case uint64:
		return v, true
	}
	return 0, false
}

// NewPublisher returns a Publisher on conn. It opens channels lazily, so it
// can be created before the broker is reachable.
func NewPublisher(conn *Conn, cfg PublisherConfig) *Publisher {
	n := cfg.Channels
	if n <= 0 {
		n = DefaultPublisherChannels
	}
	p := &Publisher{conn: conn, slots: make([]*pubSlot, n)}
	for i := range p.slots {
		p.slots[i] = &pubSlot{lock: make(chan struct{}, 1)}
	}
	return p
}

// Publish sends msg to exchange with routing key key and returns nil only
// once the broker has confirmed it, i.e. the message is on disk in every
// queue it was routed to (or, if routed nowhere, accepted by the alternate
// exchange). It returns an error if the broker nacks, the channel or
// connection is lost before the confirm, the connection is blocked by a
// broker alarm, or ctx ends first.
//
// Every field is checked before anything is sent: a name or property that
// AMQP cannot encode fails this call with ErrUnencodable instead of closing
// the connection every other publish shares.
//
// The message is sent persistent and mandatory. A message the broker
// cannot route (a task for a queue that does not exist, an exchange
// without its alternate exchange) is confirmed all the same, so a return
// is the only sign it was dropped: Publish reports it as ErrReturned, and
// runs the connection's topology declarations again (Conn.Redeclare) so
// that a retry finds the queue.
func (p *Publisher) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	c, err := p.Send(ctx, exchange, key, msg)
	if err != nil {
		return err
	}
	select {
	case <-c.Done():
		return c.Result(ctx)
	case <-ctx.Done():
		c.Abandon()
		return fmt.Errorf("rabbit: publish to %q with key %q: waiting for confirm: %w", exchange, key, ctx.Err())
	}
}

// Confirmation is a message sent by Send, awaiting the broker's answer.
// Its owner calls Result once Done is closed, or Abandon if it stops
// waiting; either frees the message's place on its channel.
type Confirmation struct {
	pc            *pubChannel
	dc            *amqp.DeferredConfirmation
	tag           uint64
	exchange, key string
	done          func()
	freed         atomic.Bool
}

// Send is the first half of Publish: it checks and sends msg and returns
// without waiting for the broker, so that a caller can wait on its own
// terms (a shared deadline, or on after giving an answer). ctx bounds
// only the wait for a channel (a reconnect, a full channel).
func (p *Publisher) Send(ctx context.Context, exchange, key string, msg amqp.Publishing) (*Confirmation, error) {
	return p.SendUntil(ctx, nil, exchange, key, msg)
}

// SendUntil is Send whose waiting also ends when stop is closed, for a
// caller that keeps its deadline in a channel rather than in ctx.
func (p *Publisher) SendUntil(ctx context.Context, stop <-chan struct{}, exchange, key string, msg amqp.Publishing) (*Confirmation, error) {
	if p.closed.Load() {
		return nil, ErrPublisherClosed
	}
	if err := CheckPublishing(exchange, key, msg); err != nil {
		return nil, fmt.Errorf("rabbit: publish to %q: %w", truncate(exchange), err)
	}
	if err := p.conn.blockedErr(); err != nil {
		// A blocked connection stops reading from the socket; a publish
		// would hang in the write, ignoring ctx. Fail fast instead.
		return nil, fmt.Errorf("rabbit: publish to %q with key %q: %w", exchange, key, err)
	}
	msg.DeliveryMode = amqp.Persistent

	slot := p.slots[p.next.Add(1)%uint64(len(p.slots))]
	pc := slot.live()
	if pc == nil {
		// The slow path: wait for a channel (and a connection).
		wctx, cancel := untilClosed(ctx, stop)
		var err error
		pc, err = p.channel(wctx, slot)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("rabbit: publish to %q with key %q: %w", exchange, key, err)
		}
	}
	select {
	case pc.inflight <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("rabbit: publish to %q with key %q: %w", exchange, key, ctx.Err())
	case <-stop:
		return nil, fmt.Errorf("rabbit: publish to %q with key %q: %w", exchange, key, context.DeadlineExceeded)
	}
	sent := false
	defer func() {
		if !sent {
			<-pc.inflight
		}
	}()

	// The caller's header table is not ours to change. Room for the
	// publish tag and a traceparent: a Go map sized for more than 8
	// entries takes several allocations instead of one.
	h := make(amqp.Table, len(msg.Headers)+2)
	for k, v := range msg.Headers {
		h[k] = v
	}
	trace.InjectAMQP(ctx, h)
	pc.pubMu.Lock()
	tag := pc.seq + 1
	h[HeaderPublishTag] = int64(tag)
	msg.Headers = h
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
	if err == nil && dc != nil {
		pc.seq = dc.DeliveryTag
	}
	pc.pubMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("rabbit: publish to %q with key %q: %w", exchange, key, err)
	}
	if dc == nil {
		// Only possible if the channel is not in confirm mode, which
		// slot.channel guarantees; never report an unconfirmed success.
		return nil, fmt.Errorf("rabbit: publish to %q with key %q: channel not in confirm mode", exchange, key)
	}
	if dc.DeliveryTag != tag {
		// Someone else published on this channel; a return could not be
		// matched to its publish, so do not claim success.
		return nil, fmt.Errorf("rabbit: publish to %q with key %q: %w: delivery tag %d, expected %d", exchange, key, ErrUnconfirmed, dc.DeliveryTag, tag)
	}

	n := p.inflight.Add(1)
	for {
		peak := p.peak.Load()
		if n <= peak || p.peak.CompareAndSwap(peak, n) {
			break
		}
	}
	sent = true
	return &Confirmation{pc: pc, dc: dc, tag: tag, exchange: exchange, key: key, done: func() {
		p.inflight.Add(-1)
		<-pc.inflight
	}}, nil
}

// Done is closed once the broker answered, or the channel closed.
func (c *Confirmation) Done() <-chan struct{} { return c.dc.Done() }

// Abandon stops waiting for the answer. The message may still be stored.
func (c *Confirmation) Abandon() {
	if c.freed.CompareAndSwap(false, true) {
		c.done()
	}
}

// Result is the broker's answer, once Done is closed: nil only if the
// message was confirmed and not returned (see Publish). ctx bounds the
// topology declarations run again after a return.
func (c *Confirmation) Result(ctx context.Context) error {
	<-c.dc.Done()
	defer c.Abandon()
	exchange, key, pc := c.exchange, c.key, c.pc
	if c.dc.Acked() {
		r, returned := pc.takeReturn(c.tag)
		if !returned {
			return nil
		}
		err := fmt.Errorf("rabbit: publish to %q with key %q: %w: %d %s", exchange, key, ErrReturned, r.ReplyCode, r.ReplyText)
		if r.ReplyCode == amqp.NoRoute {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if rerr := c.pc.conn.Redeclare(rctx); rerr != nil {
				err = fmt.Errorf("%w (redeclaring the topology failed too: %v)", err, rerr)
			}
		}
		return err
	}
	// The library completes outstanding confirms with a nack when the
	// channel shuts down; tell that apart from a real broker nack.
	if pc.ch.IsClosed() {
		if cerr := pc.closeErr.Load(); cerr != nil {
			return fmt.Errorf("rabbit: publish to %q with key %q: %w: %w", exchange, key, ErrUnconfirmed, cerr)
		}
		return fmt.Errorf("rabbit: publish to %q with key %q: %w", exchange, key, ErrUnconfirmed)
	}
	return fmt.Errorf("rabbit: publish to %q with key %q: %w", exchange, key, ErrNacked)
}

// Close closes the publisher's channels. Publishes still waiting for a
// confirm fail with ErrUnconfirmed. Close does not close the Conn.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	var errs []error
	for _, s := range p.slots {
		s.lock <- struct{}{}
		if s.ch != nil && !s.ch.ch.IsClosed() {
			if err := s.ch.ch.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		s.ch = nil
		s.cur.Store(nil)
		<-s.lock
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rabbit: close publisher: %w", err)
	}
	return nil
}

// live returns the slot's open channel without waiting, or nil if the slot
// is busy or has none.
func (s *pubSlot) live() *pubChannel {
	if pc := s.cur.Load(); pc != nil && !pc.ch.IsClosed() {
		return pc
	}
	return nil
}

// untilClosed is ctx, ended also when stop is closed.
func untilClosed(ctx context.Context, stop <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	if stop != nil {
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	return ctx, cancel
}

// channel returns the slot's live confirm channel, opening one (and
// waiting for a connection) if needed.
func (p *Publisher) channel(ctx context.Context, s *pubSlot) (*pubChannel, error) {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.lock }()

	if p.closed.Load() {
		// Checked under the slot lock so Close cannot miss a channel
		// opened concurrently.
		return nil, ErrPublisherClosed
	}
	if s.ch != nil && !s.ch.ch.IsClosed() {
		return s.ch, nil
	}
	s.ch = nil
	ch, err := p.conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("rabbit: enable confirms: %w", err)
	}
	pc := &pubChannel{
		ch:       ch,
		conn:     p.conn,
		inflight: make(chan struct{}, maxChannelInflight),
		returns:  ch.NotifyReturn(make(chan amqp.Return, 2*maxChannelInflight)),
		returned: make(map[uint64]returned),
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		// Remember why the channel died, to explain the failed publishes.
		if err, ok := <-closed; ok && err != nil {
			pc.closeErr.Store(err)
		}
	}()
	s.ch = pc
	s.cur.Store(pc)
	return pc, nil
}

// blockedErr returns ErrBlocked while the broker blocks the connection.
func (c *Conn) blockedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && c.blocked {
		return ErrBlocked
	}
	return nil
}
