package deliver

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/rabbit"
)

// Buckets are the delays of the delay queues. RabbitMQ 3.10 has no delayed
// delivery and expires messages only at the head of a queue, so each delay
// gets a queue with a fixed TTL (FIFO order equals expiry order). A task
// due in d waits in the largest bucket not longer than d, comes back to the
// deliveries queue, and if it is still early (the hy-not-before header)
// waits again in a smaller bucket. Any delay up to the retry limit takes a
// handful of hops and lands within the smallest bucket of its due time,
// jitter included.
var Buckets = []time.Duration{
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 4 * time.Hour,
}

// earlyTolerance is how early a task may run: less than this is not worth
// another trip through a delay queue.
const earlyTolerance = 20 * time.Millisecond

// Queues names the dispatcher's queues.
type Queues struct {
	// Events is the dispatcher's own queue on hookyard.events.
	Events string
	// Bindings are the routing patterns of Events (default "#").
	Bindings []string
	// Deliveries holds delivery tasks.
	Deliveries string
}

// NewQueues returns the queue names under prefix (e.g. hookyard.dispatcher).
func NewQueues(prefix string, bindings []string) Queues {
	if len(bindings) == 0 {
		bindings = []string{"#"}
	}
	return Queues{Events: prefix + ".events", Bindings: bindings, Deliveries: prefix + ".deliveries"}
}

// DelayQueue returns the delay queue of bucket b.
func (q Queues) DelayQueue(b time.Duration) string {
	return fmt.Sprintf("%s.delay.%dms", q.Deliveries, b.Milliseconds())
}

// All lists every queue, DLQs included, for cleanup in tests and tools.
func (q Queues) All() []string {
	out := []string{q.Events, rabbit.DLQName(q.Events), q.Deliveries, rabbit.DLQName(q.Deliveries)}
	for _, b := range Buckets {
		out = append(out, q.DelayQueue(b))
	}
	return out
}

// Declare declares the dispatcher's queues; it runs on every connect.
func (q Queues) Declare(ch *amqp.Channel) error {
	if err := rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: q.Events, Bindings: q.Bindings}); err != nil {
		return err
	}
	// Deferrals ack and republish, so redeliveries only come from crashes
	// and infrastructure errors; the limit is generous so an outage of
	// Redis does not push tasks to the DLQ.
	if err := rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: q.Deliveries, DeliveryLimit: 100}); err != nil {
		return err
	}
	for _, b := range Buckets {
		if err := rabbit.DeclareDelayQueue(ch, rabbit.DelayQueueSpec{Name: q.DelayQueue(b), TTL: b, TargetKey: q.Deliveries}); err != nil {
			return err
		}
	}
	return nil
}

// bucketFor picks the delay queue for a task due in d; ok is false when the
// task is due now.
func bucketFor(d time.Duration) (time.Duration, bool) {
	if d < earlyTolerance {
		return 0, false
	}
	pick := Buckets[0]
	for _, b := range Buckets {
		if b <= d {
			pick = b
		}
	}
	return pick, true
}

// Publisher publishes with broker confirms (rabbit.Publisher).
type Publisher interface {
	Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error
}

// Enqueue publishes t to the deliveries queue, through a delay queue if it
// is not yet due, and returns once the broker confirmed it.
func (q Queues) Enqueue(ctx context.Context, pub Publisher, t *Task) error {
	key := q.Deliveries
	if !t.NotBefore.IsZero() {
		if b, ok := bucketFor(time.Until(t.NotBefore)); ok {
			key = q.DelayQueue(b)
		}
	}
	if err := pub.Publish(ctx, "", key, t.Publishing()); err != nil {
		return fmt.Errorf("enqueue delivery %s/%s: %w", t.Message, t.Endpoint, err)
	}
	return nil
}
