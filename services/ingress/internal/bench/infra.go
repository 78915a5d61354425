package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/hookyard/hookyard/platform/rabbit"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// broker wraps the benchmark's own AMQP connection, used for the queues it
// declares and for the raw publish ceiling.
type broker struct {
	conn *rabbit.Conn
}

// dialBroker connects to url. The connection lives until Close or until
// ctx ends; wait bounds only the first connection attempt.
func dialBroker(ctx context.Context, url string, wait time.Duration) (*broker, error) {
	conn := rabbit.DialConfig(ctx, url, rabbit.Config{
		Name:  "hookyard-ingress-bench",
		Setup: rabbit.DeclareFunc(rabbit.DeclareTopology),
	})
	b := &broker{conn: conn}
	// Fail early with a clear error instead of at the first declaration.
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := b.with(wctx, func(*amqp.Channel) error { return nil }); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect to RabbitMQ: %w", err)
	}
	return b, nil
}

// with runs fn on a fresh channel. A failed AMQP operation closes its
// channel, so sharing one channel would make every later call fail too.
func (b *broker) with(ctx context.Context, fn func(*amqp.Channel) error) error {
	ch, err := b.conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	return fn(ch)
}

// declareQuorum declares a durable quorum queue bound to pattern on
// hookyard.events. Quorum is the queue type the services use for events, so
// a publish confirmed into it pays the same replicated-log fsync as in
// production; a classic or transient queue would flatter every figure.
func (b *broker) declareQuorum(ctx context.Context, name, pattern string) error {
	return b.with(ctx, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{
			amqp.QueueTypeArg: amqp.QueueTypeQuorum,
		}); err != nil {
			return fmt.Errorf("declare quorum queue %s: %w", name, err)
		}
		if err := ch.QueueBind(name, pattern, rabbit.EventsExchange, false, nil); err != nil {
			return fmt.Errorf("bind %s to %s with %q: %w", name, rabbit.EventsExchange, pattern, err)
		}
		return nil
	})
}

// depth returns the number of ready messages in queue.
func (b *broker) depth(ctx context.Context, name string) (int, error) {
	var n int
	err := b.with(ctx, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, amqp.Table{
			amqp.QueueTypeArg: amqp.QueueTypeQuorum,
		})
		if err != nil {
			return fmt.Errorf("inspect queue %s: %w", name, err)
		}
		n = q.Messages
		return nil
	})
	return n, err
}

// purge empties queue between phases so that a long queue left by one phase
// does not slow the next.
func (b *broker) purge(ctx context.Context, name string) error {
	return b.with(ctx, func(ch *amqp.Channel) error {
		if _, err := ch.QueuePurge(name, false); err != nil {
			return fmt.Errorf("purge queue %s: %w", name, err)
		}
		return nil
	})
}

func (b *broker) deleteQueue(ctx context.Context, name string) error {
	return b.with(ctx, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			return fmt.Errorf("delete queue %s: %w", name, err)
		}
		return nil
	})
}

// publishOp publishes body n times (one per call) to hookyard.events with
// key through pub, each call waiting for its own confirm. It is the ceiling
// for what ingress can do: every accepted webhook costs at least one such
// publish.
func publishOp(pub *rabbit.Publisher, key, run string, body []byte) Op {
	return func(ctx context.Context, i int) (int, error) {
		err := pub.Publish(ctx, rabbit.EventsExchange, key, amqp.Publishing{
			ContentType: "application/json",
			MessageId:   "raw_" + run + "_" + strconv.Itoa(i),
			Body:        body,
		})
		if err != nil {
			return 0, err
		}
		return 200, nil
	}
}

// dedupeKeyPrefix is where ingress remembers the event ids of tenant.
// It mirrors the key layout of the ingress dedupe store
// ("hookyard:ingress:dedupe:<len>.<tenant>:..."); the benchmark uses a
// tenant of its own so that it can remove exactly the keys it caused.
func dedupeKeyPrefix(tenant string) string {
	return "hookyard:ingress:dedupe:" + strconv.Itoa(len(tenant)) + "." + tenant + ":"
}

// cleanRedis removes the keys under prefix a run left behind. Ingress keeps
// dedupe keys for the provider's retry window (days), and a benchmark run
// adds tens of thousands, so leaving them would slowly fill a shared Redis.
// Returns the number of keys removed.
func cleanRedis(ctx context.Context, url, prefix string) (int, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return 0, fmt.Errorf("redis URL: %w", err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	removed := 0
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	batch := make([]string, 0, 500)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := rdb.Unlink(ctx, batch...).Result()
		if err != nil {
			return fmt.Errorf("unlink keys under %s: %w", prefix, err)
		}
		removed += int(n)
		batch = batch[:0]
		return nil
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return removed, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return removed, fmt.Errorf("scan keys under %s: %w", prefix, err)
	}
	return removed, flush()
}
