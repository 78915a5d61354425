// Package testenv connects the cache's tests to the real RabbitMQ and Redis
// (HOOKYARD_AMQP_URL, HOOKYARD_REDIS_URL), shared with other suites running
// at the same time: a test uses names of its own and deletes exactly those
// when it ends.
package testenv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/platform/testwait"
)

// ID returns a name no other test run uses.
func ID() string { return fmt.Sprintf("t%x%04x", time.Now().UnixNano(), rand.N(1<<16)) }

// Redis opens a client; when the test ends every key under prefix is
// deleted and the client closed.
func Redis(t testing.TB, prefix string) redis.UniversalClient {
	t.Helper()
	return redistest.Open(t, prefix+":")
}

// Rabbit dials the broker with setup as its topology and waits until the
// connection is up; it is closed when the test ends.
func Rabbit(t testing.TB, setup ...func(*amqp.Channel) error) *rabbit.Conn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn := rabbit.DialConfig(ctx, rabbittest.URL(), rabbit.Config{Setup: rabbit.DeclareFunc(setup...)})
	t.Cleanup(func() { cancel(); conn.Close() })
	WaitFor(t, 15*time.Second, "broker connection", func() bool { return conn.Check(context.Background()) == nil })
	return conn
}

// Cleanup deletes the named queues and exchanges when the test ends.
func Cleanup(t testing.TB, queues, exchanges []string) {
	t.Cleanup(func() {
		conn, err := amqp.Dial(rabbittest.URL())
		if err != nil {
			return
		}
		defer conn.Close()
		for _, q := range queues {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(q, false, false, false)
				ch.Close()
			}
		}
		for _, x := range exchanges {
			if ch, err := conn.Channel(); err == nil {
				_ = ch.ExchangeDelete(x, false, false)
				ch.Close()
			}
		}
	})
}

// WaitFor polls cond until it holds or timeout passes, then fails the test.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Eventually(t, timeout, what, cond)
}
