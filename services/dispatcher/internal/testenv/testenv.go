// Package testenv connects the dispatcher's tests to the real RabbitMQ and
// Redis (HOOKYARD_AMQP_URL, HOOKYARD_REDIS_URL), which they share with
// other tests running at the same time. A test therefore works only under
// names of its own (ID) and deletes exactly those when it ends; it never
// flushes a database.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/platform/testwait"
)

// AMQPURL is the broker the tests use.
func AMQPURL() string { return rabbittest.URL() }

// RedisURL is the Redis the tests use.
func RedisURL() string { return redistest.URL() }

// ID returns a name no other test run uses, usable in queue names, Redis
// keys and routing keys.
func ID() string { return fmt.Sprintf("t%x%04x", time.Now().UnixNano(), rand.N(1<<16)) }

// KeyPrefix returns a Redis key prefix of the test's own.
func KeyPrefix(id string) string { return "hookyard:test:dispatcher:" + id }

// Redis opens a client; when the test ends, every key under prefix is
// deleted and the client closed.
func Redis(t testing.TB, prefix string) redis.UniversalClient {
	t.Helper()
	return redistest.Open(t, prefix+":")
}

// DeleteKeys deletes every key under prefix (and nothing else).
func DeleteKeys(rdb redis.UniversalClient, prefix string) { redistest.DeleteKeys(rdb, prefix+":") }

// Rabbit dials the broker, declaring the shared topology and whatever
// declare adds, and waits until the connection is up. The connection is
// closed when the test ends.
func Rabbit(t testing.TB, declare ...func(*amqp.Channel) error) *rabbit.Conn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn := rabbit.DialConfig(ctx, AMQPURL(), rabbit.Config{
		Setup: rabbit.DeclareFunc(append([]func(*amqp.Channel) error{rabbit.DeclareTopology}, declare...)...),
	})
	t.Cleanup(func() { cancel(); conn.Close() })
	WaitFor(t, 10*time.Second, "broker connection", func() bool { return conn.Check(context.Background()) == nil })
	return conn
}

// DeleteQueues deletes the named queues and exchanges, ignoring errors: it
// is cleanup.
func DeleteQueues(queues []string, exchanges ...string) {
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		return
	}
	defer conn.Close()
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_, _ = ch.QueueDelete(q, false, false, false)
		ch.Close()
	}
	for _, x := range exchanges {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_ = ch.ExchangeDelete(x, false, false)
		ch.Close()
	}
}

// WaitFor polls cond until it holds or timeout passes, then fails the test.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Eventually(t, timeout, what, cond)
}

// ErrBrokerLost is what a LossyPublisher's failing publishes return.
var ErrBrokerLost = errors.New("injected: broker connection lost")

// LossyPublisher passes publishes on to Next, except that the next Fail
// of them fail as if the connection had dropped before the confirm.
type LossyPublisher struct {
	Next interface {
		Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error
	}
	Fail atomic.Int32
}

// Publish fails or passes msg on.
func (p *LossyPublisher) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	if p.Fail.Add(-1) >= 0 {
		return ErrBrokerLost
	}
	return p.Next.Publish(ctx, exchange, key, msg)
}
