package rabbit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The tests run against a real RabbitMQ 3.10+ that other test suites share.
// They never touch the broker process; every queue and binding they create
// has a unique name and is deleted afterwards. The shared topology is
// declared too, which is safe because declarations are idempotent.

func amqpURL() string { return rabbittest.URL() }

// uniqueName returns a queue or routing-key-safe name unique to this run.
func uniqueName(t testing.TB, kind string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := strings.NewReplacer("/", "-", " ", "-", ".", "-").Replace(t.Name())
	return "test." + strings.ToLower(name) + "." + kind + "." + hex.EncodeToString(b[:])
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// adminChannel opens a plain amqp091 channel straight to the broker, for
// test set-up and inspection independent of the code under test. It
// reopens the channel if a failed declaration closed it.
type admin struct {
	t    testing.TB
	conn *amqp.Connection
	mu   sync.Mutex
	ch   *amqp.Channel
}

func newAdmin(t testing.TB) *admin {
	t.Helper()
	conn, err := amqp.Dial(amqpURL())
	if err != nil {
		t.Fatalf("broker not reachable at %s: %v", amqpURL(), err)
	}
	a := &admin{t: t, conn: conn}
	t.Cleanup(func() { conn.Close() })
	return a
}

func (a *admin) channel() *amqp.Channel {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch == nil || a.ch.IsClosed() {
		ch, err := a.conn.Channel()
		if err != nil {
			a.t.Fatalf("admin channel: %v", err)
		}
		a.ch = ch
	}
	return a.ch
}

// declare declares the shared topology and spec, and deletes the queues
// (and with them their bindings) when the test ends.
func (a *admin) declare(spec QueueSpec) {
	a.t.Helper()
	if err := DeclareTopology(a.channel()); err != nil {
		a.t.Fatal(err)
	}
	if err := DeclareQueue(a.channel(), spec); err != nil {
		a.t.Fatal(err)
	}
	a.deleteLater(spec.Name, DLQName(spec.Name))
}

func (a *admin) deleteLater(queues ...string) {
	a.t.Cleanup(func() {
		for _, q := range queues {
			if _, err := a.channel().QueueDelete(q, false, false, false); err != nil {
				a.t.Logf("delete queue %s: %v", q, err)
			}
		}
	})
}

// count returns the number of ready messages in queue.
func (a *admin) count(queue string) int {
	a.t.Helper()
	q, err := a.channel().QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		a.t.Fatalf("inspect queue %s: %v", queue, err)
	}
	return q.Messages
}

// waitCount waits until queue holds want messages and stays there briefly,
// failing the test otherwise. Quorum queues report a committed count, so a
// short settle time is enough.
func (a *admin) waitCount(queue string, want int, timeout time.Duration) {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	got := -1
	for time.Now().Before(deadline) {
		if got = a.count(queue); got == want {
			time.Sleep(200 * time.Millisecond)
			if got = a.count(queue); got == want {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("queue %s holds %d messages, want %d", queue, got, want)
}

// get fetches one message from queue, waiting up to timeout.
func (a *admin) get(queue string, timeout time.Duration) (amqp.Delivery, bool) {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d, ok, err := a.channel().Get(queue, false)
		if err != nil {
			a.t.Fatalf("get from %s: %v", queue, err)
		}
		if ok {
			return d, true
		}
		if time.Now().After(deadline) {
			return amqp.Delivery{}, false
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
	return 0
}

// dialTest dials the code under test with fast backoff and closes it at the
// end of the test.
func dialTest(t testing.TB, url string, cfg Config) *Conn {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 300 * time.Millisecond
	}
	c := DialConfig(context.Background(), url, cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

func waitReady(t testing.TB, c *Conn) {
	t.Helper()
	eventually(t, 10*time.Second, "connection", func() bool { return c.Check(context.Background()) == nil })
}

// newProxy puts a TCP proxy in front of the broker so a test can simulate
// outages without touching the shared broker.
func newProxy(t testing.TB) *rabbittest.Proxy { return rabbittest.NewBrokerProxy(t) }
