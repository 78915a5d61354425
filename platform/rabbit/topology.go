package rabbit

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Names of the shared Hookyard topology. They are a contract between the
// services (and anything else that reads the bus); do not rename them.
const (
	// EventsExchange is the topic exchange every event is published to,
	// with routing key "<source>.<type>".
	EventsExchange = "hookyard.events"
	// UnroutedExchange is the alternate exchange of EventsExchange: events
	// that match no binding go here instead of being dropped.
	UnroutedExchange = "hookyard.unrouted"
	// UnroutedQueue keeps the unroutable events, so that an event published
	// before its consumer existed is not lost and can be replayed.
	UnroutedQueue = "hookyard.unrouted"
	// DeadLetterExchange is the direct exchange every consumer queue
	// dead-letters into, with routing key "<queue>.dlq".
	DeadLetterExchange = "hookyard.dlx"

	// DefaultDeliveryLimit is used when QueueSpec.DeliveryLimit is zero.
	DefaultDeliveryLimit = 10
)

// DLQName returns the name of the dead-letter queue of queue, which is also
// its routing key on DeadLetterExchange.
func DLQName(queue string) string { return queue + ".dlq" }

// Topology names an events exchange and its alternate exchange and queue
// (which share a name). Production uses DefaultTopology; a test uses its
// own, so that another consumer's catch-all binding on the shared
// exchange (any dispatcher on the same broker binds "#") cannot route
// away the events it expects to find unrouted.
type Topology struct {
	Events   string
	Unrouted string
}

// DefaultTopology is the shared Hookyard topology.
var DefaultTopology = Topology{Events: EventsExchange, Unrouted: UnroutedExchange}

// DeclareTopology declares the exchanges and queue every service relies on.
// It is idempotent and cheap, so every service calls it at start-up (ideally
// as Config.Setup, so it is repeated after every reconnect).
//
// An error closes ch (AMQP closes a channel on any failed declaration, for
// instance when an existing entity has different arguments).
func DeclareTopology(ch *amqp.Channel) error { return DefaultTopology.Declare(ch) }

// Declare declares x and the shared dead-letter exchange, as
// DeclareTopology does for DefaultTopology.
func (x Topology) Declare(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(x.Unrouted, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbit: declare exchange %s: %w", x.Unrouted, err)
	}
	if _, err := ch.QueueDeclare(x.Unrouted, true, false, false, false, amqp.Table{
		amqp.QueueTypeArg: amqp.QueueTypeQuorum,
	}); err != nil {
		return fmt.Errorf("rabbit: declare queue %s: %w", x.Unrouted, err)
	}
	if err := ch.QueueBind(x.Unrouted, "", x.Unrouted, false, nil); err != nil {
		return fmt.Errorf("rabbit: bind %s to %s: %w", x.Unrouted, x.Unrouted, err)
	}
	if err := ch.ExchangeDeclare(x.Events, amqp.ExchangeTopic, true, false, false, false, amqp.Table{
		"alternate-exchange": x.Unrouted,
	}); err != nil {
		return fmt.Errorf("rabbit: declare exchange %s: %w", x.Events, err)
	}
	if err := ch.ExchangeDeclare(DeadLetterExchange, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbit: declare exchange %s: %w", DeadLetterExchange, err)
	}
	return nil
}

// QueueSpec describes a consumer queue.
type QueueSpec struct {
	// Name of the queue; its DLQ is DLQName(Name).
	Name string

	// Exchange the bindings are made on. Empty means EventsExchange.
	Exchange string

	// Bindings are routing patterns on Exchange, e.g. "stripe.#" or
	// "*.invoice.paid". They are added, never removed: a binding dropped
	// from the list stays until it is unbound explicitly.
	Bindings []string

	// DeliveryLimit is how often a message may be delivered before the
	// broker dead-letters it (x-delivery-limit). Zero means
	// DefaultDeliveryLimit; a negative value leaves the queue without a
	// limit, which lets a poison message loop for ever.
	DeliveryLimit int

	// AtMostOnceDeadLetter switches dead-lettering back to the broker's
	// default at-most-once strategy. See DeclareQueue.
	AtMostOnceDeadLetter bool

	// Args are extra queue arguments (e.g. x-max-length). They override the
	// computed ones, so use with care.
	Args amqp.Table
}

// DeclareQueue declares a durable quorum queue with its dead-letter queue
// and bindings. It is idempotent as long as the spec does not change; a
// changed argument makes the broker refuse the declaration
// (PRECONDITION_FAILED) and close ch. Change arguments of existing queues
// with a policy instead.
//
// Dead-lettering uses the at-least-once strategy introduced in RabbitMQ
// 3.10 for quorum queues: the broker keeps a dead-lettered message in the
// source queue until the DLQ has confirmed it, so a message that exhausted
// its delivery limit is never lost on a node failure in between. The
// strategy requires x-overflow=reject-publish (the queue never drops its
// head to make room), which is what we want anyway: without a length limit
// it has no effect, and with one a full queue makes publishes fail (the
// publisher sees a nack) rather than silently dropping the oldest events.
// The cost is that dead-lettered messages count against the source queue
// until the DLQ accepts them, which is only noticeable if the DLQ is
// missing; DeclareQueue always declares it first.
func DeclareQueue(ch *amqp.Channel, spec QueueSpec) error {
	if spec.Name == "" {
		return errors.New("rabbit: declare queue: empty name")
	}
	exchange := spec.Exchange
	if exchange == "" {
		exchange = EventsExchange
	}
	dlq := DLQName(spec.Name)

	// The DLQ is terminal: no delivery limit and no dead-letter exchange of
	// its own, so operators can inspect and replay from it.
	if _, err := ch.QueueDeclare(dlq, true, false, false, false, amqp.Table{
		amqp.QueueTypeArg: amqp.QueueTypeQuorum,
	}); err != nil {
		return fmt.Errorf("rabbit: declare queue %s: %w", dlq, err)
	}
	if err := ch.QueueBind(dlq, dlq, DeadLetterExchange, false, nil); err != nil {
		return fmt.Errorf("rabbit: bind %s to %s: %w", dlq, DeadLetterExchange, err)
	}

	args := amqp.Table{
		amqp.QueueTypeArg:           amqp.QueueTypeQuorum,
		"x-dead-letter-exchange":    DeadLetterExchange,
		"x-dead-letter-routing-key": dlq,
	}
	limit := spec.DeliveryLimit
	if limit == 0 {
		limit = DefaultDeliveryLimit
	}
	if limit > 0 {
		args["x-delivery-limit"] = int64(limit)
	}
	if !spec.AtMostOnceDeadLetter {
		args["x-dead-letter-strategy"] = "at-least-once"
		args[amqp.QueueOverflowArg] = amqp.QueueOverflowRejectPublish
	}
	for k, v := range spec.Args {
		args[k] = v
	}
	if _, err := ch.QueueDeclare(spec.Name, true, false, false, false, args); err != nil {
		return fmt.Errorf("rabbit: declare queue %s: %w", spec.Name, err)
	}
	for _, key := range spec.Bindings {
		if err := ch.QueueBind(spec.Name, key, exchange, false, nil); err != nil {
			return fmt.Errorf("rabbit: bind %s to %s with %q: %w", spec.Name, exchange, key, err)
		}
	}
	return nil
}

// DelayQueueSpec describes a delay queue: a queue nobody consumes from,
// whose messages are dead-lettered to a target once their TTL expires. On
// RabbitMQ 3.10 this is the only broker-side way to delay a message (there
// is no delayed-message plugin and no delayed requeue).
type DelayQueueSpec struct {
	// Name of the delay queue.
	Name string

	// TTL applies to every message in the queue (x-message-ttl). Zero means
	// messages carry their own delay in the Expiration property instead.
	//
	// Prefer one queue per delay with a queue TTL: the broker only expires
	// messages at the head of a queue, so with per-message expirations a
	// long delay at the head holds back shorter ones behind it.
	TTL time.Duration

	// TargetExchange and TargetKey say where expired messages go. An empty
	// TargetExchange is the default exchange, where TargetKey is a queue
	// name: the usual way to send a retry back to one consumer's queue
	// only, instead of to every queue bound on hookyard.events. An empty
	// TargetKey keeps each message's original routing key (only useful if
	// messages reach the delay queue through an exchange binding).
	TargetExchange string
	TargetKey      string

	// Classic declares a classic queue instead of a quorum queue. Quorum
	// delay queues replicate and dead-letter at least once; a classic
	// queue is cheaper for high-volume delays that can be re-created.
	Classic bool
}

// DeclareDelayQueue declares a durable delay queue. Publish into it through
// the default exchange with the queue name as routing key (and, without a
// queue TTL, an Expiration in milliseconds, e.g. "30000").
func DeclareDelayQueue(ch *amqp.Channel, spec DelayQueueSpec) error {
	if spec.Name == "" {
		return errors.New("rabbit: declare delay queue: empty name")
	}
	if spec.TargetExchange == "" && spec.TargetKey == "" {
		return fmt.Errorf("rabbit: declare delay queue %s: target key required with the default exchange", spec.Name)
	}
	if spec.TTL < 0 {
		return fmt.Errorf("rabbit: declare delay queue %s: negative TTL", spec.Name)
	}
	args := amqp.Table{
		"x-dead-letter-exchange": spec.TargetExchange,
	}
	if spec.TargetKey != "" {
		args["x-dead-letter-routing-key"] = spec.TargetKey
	}
	if spec.TTL > 0 {
		args[amqp.QueueMessageTTLArg] = spec.TTL.Milliseconds()
	}
	if spec.Classic {
		args[amqp.QueueTypeArg] = amqp.QueueTypeClassic
	} else {
		args[amqp.QueueTypeArg] = amqp.QueueTypeQuorum
		args["x-dead-letter-strategy"] = "at-least-once"
		args[amqp.QueueOverflowArg] = amqp.QueueOverflowRejectPublish
	}
	if _, err := ch.QueueDeclare(spec.Name, true, false, false, false, args); err != nil {
		return fmt.Errorf("rabbit: declare delay queue %s: %w", spec.Name, err)
	}
	return nil
}

// DeclareFunc adapts a declaration to Config.Setup, e.g.
//
//	rabbit.Config{Setup: rabbit.DeclareFunc(rabbit.DeclareTopology)}
func DeclareFunc(fns ...func(ch *amqp.Channel) error) func(context.Context, *amqp.Channel) error {
	return func(_ context.Context, ch *amqp.Channel) error {
		for _, fn := range fns {
			if err := fn(ch); err != nil {
				return err
			}
		}
		return nil
	}
}
