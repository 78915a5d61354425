package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Errors reported by Conn.
var (
	// ErrNotConnected is returned by Check while no connection is up.
	ErrNotConnected = errors.New("rabbit: not connected to broker")
	// ErrBlocked is returned by Check while the broker blocks publishers
	// (memory or disk alarm). Publishes would not be confirmed, so the
	// process is not ready.
	ErrBlocked = errors.New("rabbit: connection blocked by broker")
	// ErrClosed is returned once Close was called or the Dial context ended.
	ErrClosed = errors.New("rabbit: connection manager closed")
)

// Config tunes a Conn. The zero value is usable.
type Config struct {
	// Logger receives connection state changes. Nil discards them.
	Logger *slog.Logger

	// Name is advertised to the broker as the connection_name client
	// property, so operators can tell the services apart in the management
	// UI.
	Name string

	// Heartbeat is the AMQP heartbeat interval (default 2s). A silent
	// network partition is detected once nothing has arrived from the
	// broker for three intervals, so this bounds how long Check may
	// report a dead connection as live. A broker that goes away or closes
	// the socket is detected at once.
	Heartbeat time.Duration

	// DialTimeout bounds the TCP connect, the AMQP handshake and the
	// close handshake on Close (default 5s).
	DialTimeout time.Duration

	// MinBackoff and MaxBackoff bound the delay between reconnect attempts
	// (defaults 100ms and 5s). The delay doubles per failed attempt and is
	// jittered so that many replicas do not reconnect in lockstep after a
	// broker restart.
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// Setup, if set, runs on a fresh channel after every successful dial
	// and before the connection is reported as up. Use it to declare
	// topology (see DeclareTopology), so that readiness implies the
	// exchanges and queues exist even on a freshly reset broker. If Setup
	// fails the connection is dropped and retried with backoff.
	Setup func(ctx context.Context, ch *amqp.Channel) error
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 2 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
}

// Conn is a self-healing AMQP connection. It dials in the background and
// redials with jittered exponential backoff whenever the connection is lost,
// until Close is called or the context given to Dial ends.
//
// Channels handed out by Conn belong to one underlying connection; they die
// with it. Long-lived users (Publisher, Consume) open new channels after a
// reconnect; see Connected and Generation for building others.
type Conn struct {
	urls   []string // the nodes, in order of preference
	urlErr error    // why the URL list is unusable; nothing is dialled
	next   int      // index in urls of the node to dial next
	cfg    Config
	log    *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	conn    *amqp.Connection // nil while down
	gen     uint64           // incremented on every successful connect
	up      chan struct{}    // closed while connected; replaced on loss
	down    chan struct{}    // closed when the current connection is lost
	blocked bool
	lastErr error

	redeclareMu sync.Mutex
	redeclares  atomic.Uint64 // completed Redeclare runs
}

// Dial returns a Conn that connects to url in the background. It never
// blocks and never fails: use Check or Channel to learn whether the broker
// is reachable. The Conn stops when ctx ends or Close is called.
//
// url may list the nodes of a cluster, separated by commas (ParseURLs):
// they are tried in order, and a lost connection is replaced by one to the
// next node, so that a node that dies is not dialled again first. A list
// that does not parse is never dialled; Check reports why.
func Dial(ctx context.Context, url string, log *slog.Logger) *Conn {
	return DialConfig(ctx, url, Config{Logger: log})
}

// DialConfig is Dial with explicit configuration.
func DialConfig(ctx context.Context, url string, cfg Config) *Conn {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(ctx)
	urls, urlErr := ParseURLs(url)
	c := &Conn{
		urls:    urls,
		urlErr:  urlErr,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "rabbit"),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		up:      make(chan struct{}),
		down:    closedChan(),
		lastErr: ErrNotConnected,
	}
	go c.run()
	return c
}

// Check reports whether the connection is usable: nil while connected and
// not blocked by a broker alarm. It does no I/O and is cheap enough for
// every readiness probe.
func (c *Conn) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.conn != nil && !c.conn.IsClosed() && c.blocked:
		return ErrBlocked
	case c.conn != nil && !c.conn.IsClosed():
		return nil
	case c.ctx.Err() != nil:
		return ErrClosed
	case c.lastErr != nil && !errors.Is(c.lastErr, ErrNotConnected):
		return fmt.Errorf("%w: %w", ErrNotConnected, c.lastErr)
	default:
		return ErrNotConnected
	}
}

// Connected returns a channel that is closed while a connection is up:
// already closed if connected now, otherwise closed by the next successful
// connect. Combined with Generation it lets callers notice reconnects.
func (c *Conn) Connected() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// Generation counts successful connects. It changes on every reconnect, so
// a caller that cached per-connection state (a channel, a consumer) can
// compare generations to know the state is stale.
func (c *Conn) Generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// Channel opens a channel on the current connection, waiting for a
// connection until ctx ends. The caller owns the channel and must close it.
func (c *Conn) Channel(ctx context.Context) (*amqp.Channel, error) {
	for {
		conn, up, down, err := c.current()
		if err != nil {
			return nil, err
		}
		if conn == nil {
			select {
			case <-up:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("rabbit: waiting for connection: %w", ctx.Err())
			case <-c.done:
				return nil, ErrClosed
			}
		}
		ch, err := conn.Channel()
		if err == nil {
			return ch, nil
		}
		if !conn.IsClosed() {
			return nil, fmt.Errorf("rabbit: open channel: %w", err)
		}
		// The connection died under us; wait until the run loop has noticed
		// so that the next iteration does not spin on the same dead conn.
		select {
		case <-down:
		case <-ctx.Done():
			return nil, fmt.Errorf("rabbit: waiting for connection: %w", ctx.Err())
		case <-c.done:
			return nil, ErrClosed
		}
	}
}

// Redeclare runs Config.Setup again on a fresh channel of the current
// connection. Setup runs on every connect; this is for when something it
// declares went missing while connected (a queue deleted by an operator,
// or lost on a broker node), which the Publisher learns from a returned
// message. Callers that arrive while a run is in progress share the next
// completed one instead of starting their own.
func (c *Conn) Redeclare(ctx context.Context) error {
	if c.cfg.Setup == nil {
		return nil
	}
	seen := c.redeclares.Load()
	c.redeclareMu.Lock()
	defer c.redeclareMu.Unlock()
	if c.redeclares.Load() != seen {
		// Another caller declared everything after this one asked.
		return nil
	}
	ch, err := c.Channel(ctx)
	if err != nil {
		return fmt.Errorf("rabbit: redeclare: %w", err)
	}
	defer ch.Close()
	// AMQP calls ignore contexts; closing the channel when ctx ends fails
	// whatever declaration Setup is blocked in.
	stop := context.AfterFunc(ctx, func() { _ = ch.Close() })
	defer stop()
	if err := c.cfg.Setup(ctx, ch); err != nil {
		return fmt.Errorf("rabbit: redeclare: %w", err)
	}
	c.redeclares.Add(1)
	c.log.Info("rabbit topology declared again after a returned message")
	return nil
}

// Close stops reconnecting and closes the connection. Channels opened from
// it are closed too. Close waits for the background loop to exit.
func (c *Conn) Close() error {
	c.cancel()
	<-c.done
	return nil
}

func (c *Conn) current() (conn *amqp.Connection, up, down chan struct{}, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return nil, nil, nil, ErrClosed
	}
	return c.conn, c.up, c.down, nil
}

// run is the connection loop: dial, wait for loss, move on to the next
// node, repeat. A failed dial moves on to the next node at once; only when
// every node has failed in a row does it back off, so a dead node in a
// cluster costs one refused dial, not a backoff.
func (c *Conn) run() {
	defer close(c.done)
	if c.urlErr != nil {
		c.setError(c.urlErr)
		c.log.Error("rabbit AMQP URL unusable, not connecting", "err", c.urlErr)
		<-c.ctx.Done()
		return
	}
	failures := 0
	for {
		url := c.urls[c.next]
		c.next = (c.next + 1) % len(c.urls)
		conn, raw, err := c.connect(url)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			c.setError(err)
			failures++
			if failures%len(c.urls) != 0 {
				c.log.Warn("rabbit connect failed, trying the next node", "node", nodeAddr(url), "err", err)
				continue
			}
			round := failures/len(c.urls) - 1
			delay := backoff(round, c.cfg.MinBackoff, c.cfg.MaxBackoff)
			c.log.Warn("rabbit connect failed", "node", nodeAddr(url), "err", err, "attempt", round+1, "retry_in", delay)
			if !sleep(c.ctx, delay) {
				return
			}
			continue
		}
		failures = 0
		if !c.serve(conn, raw, url) {
			return
		}
	}
}

// serve publishes conn as the current connection and blocks until it is
// lost (returns true) or the Conn is shutting down (returns false).
//
// Besides waiting for amqp091's close notification it runs a watchdog on
// the socket: if nothing at all arrives from the broker for three heartbeat
// intervals the socket is closed, which makes the library shut the
// connection down. amqp091 arms its read deadline only after reading a
// frame, so a partition that starts right after the handshake would
// otherwise leave the connection looking healthy for ever.
func (c *Conn) serve(conn *amqp.Connection, raw *watchedConn, url string) bool {
	// Both channels are buffered: the library sends at most one value to
	// each before closing them, so it never blocks on us.
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 1))

	silence := 3 * conn.Config.Heartbeat // negotiated value
	var watchdog <-chan time.Time
	if silence > 0 {
		t := time.NewTicker(conn.Config.Heartbeat / 2)
		defer t.Stop()
		watchdog = t.C
	}

	c.mu.Lock()
	c.conn = conn
	c.gen++
	c.blocked = false
	c.lastErr = nil
	c.down = make(chan struct{})
	close(c.up)
	gen := c.gen
	c.mu.Unlock()
	c.log.Info("rabbit connected", "node", nodeAddr(url), "generation", gen)

	for {
		select {
		case <-c.ctx.Done():
			c.markDown(ErrClosed)
			// A clean close waits for the broker's close-ok, which never
			// comes over a dead network; cut the socket if it takes long.
			t := time.AfterFunc(c.cfg.DialTimeout, func() { raw.Close() })
			_ = conn.Close()
			t.Stop()
			return false
		case <-watchdog:
			if idle := raw.idle(); idle > silence {
				c.log.Warn("rabbit broker silent, dropping connection", "idle", idle, "generation", gen)
				raw.Close()
			}
		case b, ok := <-blocked:
			if !ok {
				blocked = nil
				continue
			}
			c.mu.Lock()
			c.blocked = b.Active
			c.mu.Unlock()
			if b.Active {
				c.log.Warn("rabbit connection blocked by broker", "reason", b.Reason)
			} else {
				c.log.Info("rabbit connection unblocked")
			}
		case amqpErr := <-closed:
			var err error = ErrNotConnected
			if amqpErr != nil {
				err = amqpErr
			}
			c.markDown(err)
			c.log.Warn("rabbit connection lost", "node", nodeAddr(url), "err", err, "generation", gen)
			return true
		}
	}
}

func (c *Conn) markDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = nil
	c.blocked = false
	c.lastErr = err
	c.up = make(chan struct{})
	close(c.down)
}

func (c *Conn) setError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err
}

// connect dials the broker at url and runs Setup. The dial honours the Conn's
// context so that Close does not wait for a slow TCP connect.
func (c *Conn) connect(url string) (*amqp.Connection, *watchedConn, error) {
	props := amqp.NewConnectionProperties()
	if c.cfg.Name != "" {
		props.SetClientConnectionName(c.cfg.Name)
	}
	timeout := c.cfg.DialTimeout
	var raw *watchedConn
	conn, err := amqp.DialConfig(url, amqp.Config{
		Heartbeat:  c.cfg.Heartbeat,
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			nc, err := d.DialContext(c.ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bound the handshake; amqp091 clears the deadline once the
			// connection is open and heartbeats take over.
			if err := nc.SetDeadline(time.Now().Add(timeout)); err != nil {
				nc.Close()
				return nil, err
			}
			raw = newWatchedConn(newCoalescedConn(nc))
			return raw, nil
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("rabbit: dial: %w", err)
	}
	if c.cfg.Setup != nil {
		if err := c.setup(conn, raw); err != nil {
			t := time.AfterFunc(timeout, func() { raw.Close() })
			_ = conn.Close()
			t.Stop()
			return nil, nil, err
		}
	}
	return conn, raw, nil
}

// watchedConn records when bytes last arrived from the broker.
type watchedConn struct {
	net.Conn
	lastRead atomic.Int64 // unix nanoseconds
}

func newWatchedConn(nc net.Conn) *watchedConn {
	w := &watchedConn{Conn: nc}
	w.lastRead.Store(time.Now().UnixNano())
	return w
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

func (w *watchedConn) idle() time.Duration {
	return time.Duration(time.Now().UnixNano() - w.lastRead.Load())
}

// setup runs Config.Setup with a bounded time. AMQP calls ignore contexts,
// so when the time is up (or the Conn closes) the socket is cut, which
// fails whatever call Setup is blocked in.
func (c *Conn) setup(conn *amqp.Connection, raw *watchedConn) error {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbit: setup channel: %w", err)
	}
	defer ch.Close()
	if err := c.cfg.Setup(ctx, ch); err != nil {
		return fmt.Errorf("rabbit: setup: %w", err)
	}
	return nil
}

// backoff returns the delay before reconnect attempt n (0-based): the
// exponential step, capped, with "equal jitter" (half fixed, half random) so
// that the delay never collapses to zero yet replicas spread out.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	if d > hi {
		d = hi
	}
	half := d / 2
	return half + rand.N(half+1)
}

// sleep waits for d or until ctx ends; it reports whether the full delay
// elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func closedChan() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}
