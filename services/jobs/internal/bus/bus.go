// Package bus moves ready notes through RabbitMQ: a note says "generation
// g of task t is due" and is the only thing the broker carries. Each
// tenant's queue is its own quorum queue (a priority lane with its own
// consumers), and the built-in http task has one queue the service itself
// consumes. Notes are acknowledged as soon as the task is leased in Redis,
// so no delivery is held unacknowledged while a task runs, however long.
package bus

import (
	"context"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// HTTPTask is the name of the built-in task run by the service.
const HTTPTask = "http"

// DeliveryLimit of task queues. A note is requeued whenever a worker that
// subscribed with a free slot filled up before taking it, which is normal
// at full load, so the limit only guards against a note that crashes its
// consumer.
const DeliveryLimit = 1000

// LeaseTries is how many deliveries a note gets whose lease fails with an
// error (Redis unreachable, a task hash it cannot read) before it is
// dead-lettered instead of requeued. Dropping a note loses nothing: the
// task's schedule entry publishes a new one after store.NoteTimeout.
const LeaseTries = 5

// Requeue hands back a note whose lease failed: to its queue for another
// try, or to the queue's dead letters once it has had LeaseTries
// deliveries, so a persistent error does not loop. It reports whether the
// note was requeued.
func Requeue(d amqp.Delivery) bool {
	n, _ := d.Headers["x-delivery-count"].(int64) // set by quorum queues on redeliveries
	if n+1 >= LeaseTries {
		_ = d.Nack(false, false)
		return false
	}
	_ = d.Nack(false, true)
	return true
}

// Bus publishes notes and names the queues.
type Bus struct {
	conn   *rabbit.Conn
	pub    *rabbit.Publisher
	prefix string

	mu       sync.Mutex
	declared map[string]uint64 // queue → connection generation declared on
}

// New returns a Bus whose queues are named under prefix.
func New(conn *rabbit.Conn, pub *rabbit.Publisher, prefix string) *Bus {
	return &Bus{conn: conn, pub: pub, prefix: prefix, declared: map[string]uint64{}}
}

// HTTPQueue is the queue of built-in http tasks.
func (b *Bus) HTTPQueue() string { return b.prefix + ".http" }

// TaskQueue is the broker queue of a tenant's queue.
func (b *Bus) TaskQueue(tenant, queue string) string { return b.prefix + ".t." + tenant + "." + queue }

// Route is the broker queue a task's notes go to.
func (b *Bus) Route(tenant, name, queue string) string {
	if name == HTTPTask {
		return b.HTTPQueue()
	}
	return b.TaskQueue(tenant, queue)
}

// Declare declares the queues the service itself always needs.
func (b *Bus) Declare(ch *amqp.Channel) error { return declare(ch, b.HTTPQueue()) }

func declare(ch *amqp.Channel, name string) error {
	return rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: name, DeliveryLimit: DeliveryLimit})
}

// Ensure declares queue once per broker connection: publishing to a queue
// that does not exist would be confirmed and dropped.
func (b *Bus) Ensure(ctx context.Context, queue string) error {
	gen := b.conn.Generation()
	b.mu.Lock()
	ok := b.declared[queue] == gen && gen != 0
	b.mu.Unlock()
	if ok {
		return nil
	}
	ch, err := b.conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := declare(ch, queue); err != nil {
		return err
	}
	b.mu.Lock()
	b.declared[queue] = gen
	b.mu.Unlock()
	return nil
}

// Publish sends the note r to queue and returns once the broker confirmed.
func (b *Bus) Publish(ctx context.Context, queue string, r store.Ready) error {
	if err := b.Ensure(ctx, queue); err != nil {
		return fmt.Errorf("declare %s: %w", queue, err)
	}
	return b.pub.Publish(ctx, "", queue, amqp.Publishing{ContentType: "text/plain", Body: []byte(r.String())})
}

// Conn is the broker connection.
func (b *Bus) Conn() *rabbit.Conn { return b.conn }
