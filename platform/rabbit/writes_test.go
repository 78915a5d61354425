package rabbit

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// gatedConn is a socket whose writes wait for the test to let them through
// and are recorded one by one.
type gatedConn struct {
	net.Conn // nil: only Write, Close and SetWriteDeadline are used
	entered  chan struct{}
	gate     chan error
	left     chan struct{} // a write returned
	mu       sync.Mutex
	writes   [][]byte
	closed   bool
}

func newGatedConn() *gatedConn {
	return &gatedConn{entered: make(chan struct{}, 16), gate: make(chan error), left: make(chan struct{}, 16)}
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.entered <- struct{}{}
	defer func() { g.left <- struct{}{} }()
	if err := <-g.gate; err != nil {
		return 0, err
	}
	g.mu.Lock()
	g.writes = append(g.writes, bytes.Clone(p))
	g.mu.Unlock()
	return len(p), nil
}

func (g *gatedConn) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	return nil
}

func (g *gatedConn) SetWriteDeadline(time.Time) error { return nil }

func (g *gatedConn) recorded() ([][]byte, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writes, g.closed
}

// The frames written while a socket write is in flight go out together in
// the next one, in order: one system call for many publishes.
func TestCoalescedConnBatchesWritesMadeDuringAWrite(t *testing.T) {
	g := newGatedConn()
	c := newCoalescedConn(g)

	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	<-g.entered // "a" is being written and the socket is stuck
	for _, s := range []string{"b", "c", "d"} {
		// Returns although the socket write of "a" has not finished.
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	g.gate <- nil // "a" done
	<-g.entered
	g.gate <- nil // "bcd" done
	<-g.left
	<-g.left

	writes, _ := g.recorded()
	if len(writes) != 2 || string(writes[0]) != "a" || string(writes[1]) != "bcd" {
		t.Fatalf("socket writes %q, want [a bcd]", writes)
	}
	if n := c.socketWrites(); n != 2 {
		t.Fatalf("counted %d socket writes, want 2", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("e")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// A failed socket write fails every later write and closes the socket, so
// the AMQP reader ends and the publishes awaiting confirms fail with it.
func TestCoalescedConnWriteErrorClosesTheSocket(t *testing.T) {
	g := newGatedConn()
	c := newCoalescedConn(g)
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	if _, err := c.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	broken := errors.New("connection reset")
	g.gate <- broken
	<-c.done
	if _, closed := g.recorded(); !closed {
		t.Fatal("socket left open after a failed write")
	}
	if _, err := c.Write([]byte("c")); !errors.Is(err, broken) {
		t.Fatalf("write after failure: %v, want %v", err, broken)
	}
	if writes, _ := g.recorded(); len(writes) != 0 {
		t.Fatalf("bytes after the failed write were sent: %q", writes)
	}
}

// Close sends what was written before it, then closes.
func TestCoalescedConnCloseDrains(t *testing.T) {
	g := newGatedConn()
	c := newCoalescedConn(g)
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	if _, err := c.Write([]byte("close-ok")); err != nil {
		t.Fatal(err)
	}
	go func() {
		g.gate <- nil
		<-g.entered
		g.gate <- nil
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	writes, closed := g.recorded()
	if len(writes) != 2 || string(writes[1]) != "close-ok" || !closed {
		t.Fatalf("writes %q closed %v, want [a close-ok] and closed", writes, closed)
	}
}
