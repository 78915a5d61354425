package task

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/delay"
	"github.com/hookyard/hookyard/platform/rabbit"
)

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

// Delays is the delay ladder in front of the deliveries queue.
func (q Queues) Delays() delay.Ladder { return delay.New(q.Deliveries) }

// All lists every queue, DLQs included, for cleanup in tests and tools.
func (q Queues) All() []string {
	out := []string{q.Events, rabbit.DLQName(q.Events), q.Deliveries, rabbit.DLQName(q.Deliveries)}
	return append(out, q.Delays().Queues()...)
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
	return q.Delays().Declare(ch)
}

// Publisher publishes with broker confirms (rabbit.Publisher).
type Publisher interface {
	Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error
}

// Enqueue publishes t to the deliveries queue, through a delay queue if it
// is not yet due, and returns once the broker confirmed it.
func (q Queues) Enqueue(ctx context.Context, pub Publisher, t *Task) error {
	key := q.Delays().Key(t.NotBefore)
	if err := pub.Publish(ctx, "", key, t.Publishing()); err != nil {
		return fmt.Errorf("enqueue delivery %s/%s: %w", t.Message, t.Endpoint, err)
	}
	return nil
}
