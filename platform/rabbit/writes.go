package rabbit

import (
	"errors"
	"net"
	"sync"
	"time"
)

// maxPendingWrite bounds the bytes coalescedConn holds for the socket. A
// Write beyond it waits, as a write to a full socket buffer would, so a
// broker that stops reading slows publishers down instead of growing
// memory.
const maxPendingWrite = 1 << 20

// closeDrain bounds how long Close waits for the bytes already written to
// reach the socket (a close-ok frame, say) before cutting it.
const closeDrain = 250 * time.Millisecond

// coalescedConn is a net.Conn whose writes are sent to the socket by one
// goroutine, several at a time. amqp091-go flushes its buffer once per
// published message, under a connection-wide lock, so concurrent publishes
// would otherwise cost one write system call each, one after the other.
// Here Write copies the bytes and returns; while the socket write of one
// batch is in flight the next ones collect, and go in the next write. There
// is no timer: on an idle connection a write goes out at once.
//
// Nothing is confirmed by a write: a publish succeeds only on the broker's
// confirm, which cannot come for bytes the broker never received. If a
// socket write fails, the connection is closed, so the library's reader
// fails, the connection shuts down and every publish still waiting for a
// confirm fails with it.
type coalescedConn struct {
	net.Conn

	mu      sync.Mutex
	cond    *sync.Cond // signalled when pending shrinks or the writer stops
	pending []byte
	spare   []byte // the buffer last written, reused for the next batch
	writing bool   // the writer goroutine holds a batch
	err     error  // first write error, or net.ErrClosed after Close
	wake    chan struct{}
	done    chan struct{} // closed when the writer goroutine ends

	// writes counts socket writes; tests compare it with the writes made.
	writes int
}

func newCoalescedConn(nc net.Conn) *coalescedConn {
	c := &coalescedConn{Conn: nc, wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	go c.writeLoop()
	return c
}

// Write queues p for the socket. It fails once a socket write failed or
// the connection was closed.
func (c *coalescedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.pending) > 0 && len(c.pending)+len(p) > maxPendingWrite {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	c.pending = append(c.pending, p...)
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// writeLoop sends what is pending, one batch per socket write, until the
// connection fails or is closed with nothing left to send.
func (c *coalescedConn) writeLoop() {
	defer close(c.done)
	for {
		c.mu.Lock()
		for len(c.pending) == 0 {
			if c.err != nil {
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
		}
		batch := c.pending
		c.pending = c.spare[:0]
		c.writing = true
		c.writes++
		c.cond.Broadcast()
		c.mu.Unlock()

		_, err := c.Conn.Write(batch)

		c.mu.Lock()
		c.writing = false
		c.spare = batch
		if cap(c.spare) > 2*maxPendingWrite {
			c.spare = nil // a huge message passed; do not keep its buffer
		}
		if err != nil {
			if c.err == nil || errors.Is(c.err, net.ErrClosed) {
				c.err = err
			}
			c.pending = nil
			c.cond.Broadcast()
			c.mu.Unlock()
			// Fail the reader too, so the library shuts the connection
			// down and fails every publish awaiting a confirm.
			_ = c.Conn.Close()
			return
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// Close sends what is already queued (bounded by closeDrain), then closes
// the socket. Later writes fail.
func (c *coalescedConn) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	busy := len(c.pending) > 0 || c.writing
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if busy {
		// A stuck write ends at the deadline; the writer then stops.
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeDrain))
		<-c.done
	}
	return c.Conn.Close()
}

// socketWrites is how many socket writes were made so far.
func (c *coalescedConn) socketWrites() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}
