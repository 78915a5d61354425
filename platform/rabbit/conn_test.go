package rabbit

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestBackoffBounds(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	for n := 0; n < 40; n++ {
		step := lo << min(n, 10)
		if step > hi {
			step = hi
		}
		for i := 0; i < 50; i++ {
			d := backoff(n, lo, hi)
			if d < step/2 || d > step {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, step/2, step)
			}
		}
	}
}

func TestConnConnectsAndCloses(t *testing.T) {
	c := dialTest(t, amqpURL(), Config{Name: "rabbit-test"})
	waitReady(t, c)
	select {
	case <-c.Connected():
	default:
		t.Fatal("Connected() not closed while connected")
	}
	if g := c.Generation(); g != 1 {
		t.Fatalf("generation = %d, want 1", g)
	}

	ch, err := c.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := DeclareTopology(ch); err != nil {
		t.Fatal(err)
	}
	ch.Close()

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Check after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Channel(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Channel after Close = %v, want ErrClosed", err)
	}
}

func TestConnStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := Dial(ctx, amqpURL(), testLogger(t))
	waitReady(t, c)
	cancel()
	eventually(t, 5*time.Second, "Check to fail after ctx end", func() bool {
		return errors.Is(c.Check(context.Background()), ErrClosed)
	})
	c.Close()
}

func TestConnUnreachableBroker(t *testing.T) {
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	c := dialTest(t, "amqp://guest:guest@"+addr+"/", Config{})
	time.Sleep(300 * time.Millisecond)
	if err := c.Check(context.Background()); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Check = %v, want ErrNotConnected", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Channel(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Channel = %v, want deadline exceeded", err)
	}
	// Close must not hang while the loop is backing off.
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close hung")
	}
}

func TestConnReconnectsAfterCut(t *testing.T) {
	p := newProxy(t)
	setups := make(chan struct{}, 10)
	c := dialTest(t, p.URL(), Config{
		Setup: func(ctx context.Context, ch *amqp.Channel) error {
			setups <- struct{}{}
			return DeclareTopology(ch)
		},
	})
	waitReady(t, c)

	p.Cut()
	took := eventually(t, 2*time.Second, "Check to fail after cut", func() bool {
		return c.Check(context.Background()) != nil
	})
	t.Logf("outage detected after %v", took)
	eventually(t, time.Second, "Connected() to reopen", func() bool {
		select {
		case <-c.Connected():
			return false
		default:
			return true
		}
	})
	// While the proxy refuses connections the loop keeps failing.
	time.Sleep(500 * time.Millisecond)
	if err := c.Check(context.Background()); err == nil {
		t.Fatal("Check = nil during outage")
	}

	p.Restore()
	waitReady(t, c)
	if g := c.Generation(); g != 2 {
		t.Fatalf("generation = %d, want 2", g)
	}
	if len(setups) != 2 {
		t.Fatalf("Setup ran %d times, want once per connect (2)", len(setups))
	}
	ch, err := c.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ch.Close()
}

func TestConnDetectsSilentPartition(t *testing.T) {
	p := newProxy(t)
	c := dialTest(t, p.URL(), Config{Heartbeat: time.Second})
	waitReady(t, c)

	p.Freeze()
	took := eventually(t, 8*time.Second, "Check to fail during partition", func() bool {
		return c.Check(context.Background()) != nil
	})
	t.Logf("partition detected after %v", took)
	p.Thaw()
	waitReady(t, c)
}

func TestConnSetupFailureIsRetried(t *testing.T) {
	calls := 0
	c := dialTest(t, amqpURL(), Config{
		Setup: func(ctx context.Context, ch *amqp.Channel) error {
			calls++ // only touched by the connection loop goroutine
			if calls < 3 {
				return errors.New("not yet")
			}
			return nil
		},
	})
	waitReady(t, c)
	if g := c.Generation(); g != 1 {
		t.Fatalf("generation = %d, want 1 (failed setups must not count)", g)
	}
}

func TestConnCloseOnDeadNetwork(t *testing.T) {
	p := newProxy(t)
	c := dialTest(t, p.URL(), Config{DialTimeout: time.Second})
	waitReady(t, c)
	p.Freeze()
	defer p.Thaw()

	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close hung on a partitioned connection")
	}
}
