// Package delay schedules AMQP messages for later on brokers without a
// delayed-delivery feature (RabbitMQ 3.10 quorum queues, no plugin).
//
// A Ladder is a set of delay queues with fixed per-queue TTLs that
// dead-letter back into one target queue. RabbitMQ expires messages only at
// the head of a queue, so a fixed TTL per queue keeps expiry order equal to
// FIFO order. A message due in d waits in the largest rung not longer than
// d, returns to the target, and if it is still early (the consumer checks
// its due time) waits again in a smaller rung; any delay takes a handful of
// hops and lands within the smallest rung of its due time.
//
// Expired messages return through a durable direct exchange of the ladder
// (Exchange), where the target is bound under its own name, not through the
// default exchange: after a restart RabbitMQ 3.10 can report the default
// exchange as missing to a quorum queue's dead-lettering and hold expired
// messages for minutes (rabbitmq-server issue 12625).
package delay

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/rabbit"
)

// DefaultRungs are the delays of a ladder's queues.
var DefaultRungs = []time.Duration{
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 4 * time.Hour,
}

// Tolerance is how early a message may be taken as due: less than this is
// not worth another trip through a delay queue.
const Tolerance = 20 * time.Millisecond

// Ladder is the delay queues in front of one target queue.
type Ladder struct {
	// Target is the queue messages return to once their rung expires.
	Target string
	// Rungs are the delays, ascending; DefaultRungs when empty.
	Rungs []time.Duration
}

// New returns the ladder for target with the default rungs.
func New(target string) Ladder { return Ladder{Target: target} }

func (l Ladder) rungs() []time.Duration {
	if len(l.Rungs) == 0 {
		return DefaultRungs
	}
	return l.Rungs
}

// Queue returns the delay queue of rung r. The "v2" names the queues that
// dead-letter through Exchange: a queue's arguments cannot change once it
// exists, so these are new queues beside the old ones (LegacyQueues).
func (l Ladder) Queue(r time.Duration) string {
	return fmt.Sprintf("%s.delay.v2.%dms", l.Target, r.Milliseconds())
}

// Exchange is the direct exchange the delay queues dead-letter into; the
// target is bound to it with its own name as the key.
func (l Ladder) Exchange() string { return l.Target + ".delay.return" }

// LegacyQueues lists the delay queues of earlier releases, which
// dead-letter through the default exchange. They are no longer declared or
// published to; what they still hold returns to the target as before, and
// once they are empty (after the longest rung) an operator may delete them.
func (l Ladder) LegacyQueues() []string {
	out := make([]string, 0, len(l.rungs()))
	for _, r := range l.rungs() {
		out = append(out, fmt.Sprintf("%s.delay.%dms", l.Target, r.Milliseconds()))
	}
	return out
}

// Queues lists the delay queues, for cleanup in tests and tools.
func (l Ladder) Queues() []string {
	out := make([]string, 0, len(l.rungs()))
	for _, r := range l.rungs() {
		out = append(out, l.Queue(r))
	}
	return out
}

// Declare declares the return exchange, binds the target to it and
// declares the delay queues; run it on every connect, after the target
// queue is declared.
func (l Ladder) Declare(ch *amqp.Channel) error {
	x := l.Exchange()
	if err := ch.ExchangeDeclare(x, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("delay: declare exchange %s: %w", x, err)
	}
	if err := ch.QueueBind(l.Target, l.Target, x, false, nil); err != nil {
		return fmt.Errorf("delay: bind %s to %s: %w", l.Target, x, err)
	}
	for _, r := range l.rungs() {
		if err := rabbit.DeclareDelayQueue(ch, rabbit.DelayQueueSpec{Name: l.Queue(r), TTL: r, TargetExchange: x, TargetKey: l.Target}); err != nil {
			return err
		}
	}
	return nil
}

// Rung picks the rung for a message due in d; ok is false when it is due
// now (within Tolerance).
func (l Ladder) Rung(d time.Duration) (time.Duration, bool) {
	if d < Tolerance {
		return 0, false
	}
	rs := l.rungs()
	pick := rs[0]
	for _, r := range rs {
		if r <= d {
			pick = r
		}
	}
	return pick, true
}

// Key returns the routing key (on the default exchange) for a message due
// at notBefore: the target itself when it is due (or notBefore is zero),
// otherwise a delay queue.
func (l Ladder) Key(notBefore time.Time) string {
	if notBefore.IsZero() {
		return l.Target
	}
	if r, ok := l.Rung(time.Until(notBefore)); ok {
		return l.Queue(r)
	}
	return l.Target
}
