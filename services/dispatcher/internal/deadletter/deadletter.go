// Package deadletter consumes the dispatcher's dead-letter queues, so that
// whatever the broker dead-letters shows in the API as a dead letter with
// a reason (listed, counted, resendable) instead of sitting unseen in a
// queue.
//
// On RabbitMQ 3.10 quorum queues every return of a message to its queue
// counts towards x-delivery-limit, including returns caused by a lost
// connection or a stopping consumer. A message dead-lettered for its
// delivery limit is therefore first put back into its queue, up to
// MaxRevivals times: healthy work that met a few outages is delivered,
// and only a message that keeps coming back (one that crashes its
// consumer) ends as a dead letter.
package deadletter

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sync/errgroup"

	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/fanout"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/metrics"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
)

// RevivalsHeader counts how often a message came back from a DLQ.
const RevivalsHeader = "x-hookyard-revivals"

// MaxRevivals is how often a message dead-lettered for its delivery limit
// is put back before it is recorded as a dead letter.
const MaxRevivals = 5

// Consumer records the dispatcher's broker dead letters.
type Consumer struct {
	queues   task.Queues
	fanout   *fanout.Fanout
	messages *message.Store
	gate     *admit.Gate
	pub      task.Publisher
	metrics  *metrics.Metrics
	log      *slog.Logger
	// MaxRevivals overrides the package default when positive.
	MaxRevivals int
}

// New returns a Consumer.
func New(q task.Queues, f *fanout.Fanout, msgs *message.Store, gate *admit.Gate, pub task.Publisher, m *metrics.Metrics, log *slog.Logger) *Consumer {
	return &Consumer{queues: q, fanout: f, messages: msgs, gate: gate, pub: pub, metrics: m, log: log, MaxRevivals: MaxRevivals}
}

// Run consumes the events and deliveries DLQs until ctx ends.
func (c *Consumer) Run(ctx context.Context, conn *rabbit.Conn) error {
	g, ctx := errgroup.WithContext(ctx)
	cfg := rabbit.ConsumeConfig{Prefetch: 16, ShutdownGrace: 10 * time.Second}
	g.Go(func() error { return conn.ConsumeWithConfig(ctx, rabbit.DLQName(c.queues.Events), cfg, c.HandleEvent) })
	g.Go(func() error {
		return conn.ConsumeWithConfig(ctx, rabbit.DLQName(c.queues.Deliveries), cfg, c.HandleTask)
	})
	return g.Wait()
}

// Reason says why d was dead-lettered: the dispatcher's own reason when it
// moved d itself, otherwise the broker's (x-death).
func Reason(d amqp.Delivery) string {
	if r, ok := d.Headers[fanout.ReasonHeader].(string); ok && r != "" {
		return r
	}
	reason, queue := brokerDeath(d)
	if reason == "" {
		return "dead-lettered by the broker"
	}
	switch reason {
	case "delivery_limit":
		return fmt.Sprintf("broker: delivery limit of %s reached", queue)
	case "rejected":
		return fmt.Sprintf("broker: rejected from %s", queue)
	}
	return fmt.Sprintf("broker: %s from %s", reason, queue)
}

// brokerDeath returns the reason and queue of d's latest dead-lettering.
func brokerDeath(d amqp.Delivery) (reason, queue string) {
	if deaths, ok := d.Headers["x-death"].([]any); ok && len(deaths) > 0 {
		if t, ok := deaths[0].(amqp.Table); ok {
			reason, _ = t["reason"].(string)
			queue, _ = t["queue"].(string)
			return reason, queue
		}
	}
	reason, _ = d.Headers["x-first-death-reason"].(string)
	queue, _ = d.Headers["x-first-death-queue"].(string)
	return reason, queue
}

func revivals(d amqp.Delivery) int {
	switch n := d.Headers[RevivalsHeader].(type) {
	case int32:
		return int(n)
	case int64:
		return int(n)
	}
	return 0
}

// revive puts d back into queue if the broker dead-lettered it for its
// delivery limit and it has not come back too often. It reports whether
// it did (d is then settled).
func (c *Consumer) revive(ctx context.Context, d amqp.Delivery, queue string, msg amqp.Publishing) bool {
	if _, ok := d.Headers[fanout.ReasonHeader]; ok {
		return false
	}
	reason, _ := brokerDeath(d)
	n := revivals(d)
	if reason != "delivery_limit" || n >= c.MaxRevivals {
		return false
	}
	msg.Headers[RevivalsHeader] = int32(n + 1)
	delete(msg.Headers, "x-death")
	delete(msg.Headers, "x-first-death-reason")
	delete(msg.Headers, "x-first-death-queue")
	delete(msg.Headers, "x-first-death-exchange")
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := c.pub.Publish(pctx, "", queue, msg); err != nil {
		c.log.Warn("putting back a dead letter failed; trying later", "err", err, "queue", queue)
		c.later(ctx, d)
		return true
	}
	c.log.Warn("message reached its delivery limit through returns, put back", "queue", queue, "revivals", n+1, "message_id", d.MessageId)
	_ = d.Ack(false)
	return true
}

// later returns d to its DLQ after a pause, for a failure of Redis or
// the broker. A DLQ has no delivery limit, so nothing is lost.
func (c *Consumer) later(ctx context.Context, d amqp.Delivery) {
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
	}
	_ = d.Nack(false, true)
}

// HandleEvent records an event the broker (or the fan-out) dead-lettered
// as a dead letter of its message, with no endpoint: resending it fans it
// out again.
func (c *Consumer) HandleEvent(ctx context.Context, d amqp.Delivery) {
	ev, m, err := fanout.Decode(d)
	if err != nil || ev.GetTenant() == "" {
		// Nobody's to show: the payload is not an event of a tenant.
		c.log.Error("dropping a dead-lettered event that names no tenant", "err", err, "message_id", d.MessageId, "reason", Reason(d))
		c.metrics.DeadLetter.Inc()
		_ = d.Ack(false)
		return
	}
	if c.revive(ctx, d, c.queues.Events, fanout.Copy(d, m.RoutingKey)) {
		return
	}
	ctx = context.WithoutCancel(ctx)
	tenant, reason := ev.GetTenant(), Reason(d)
	if err := c.fanout.Record(ctx, tenant, m); err != nil {
		c.log.Warn("recording a dead-lettered event failed; trying later", "err", err, "event_id", ev.GetId())
		c.later(ctx, d)
		return
	}
	err = c.messages.DeadLetter(ctx, tenant, m.ID, "", nil, reason, time.Now())
	if err == nil {
		err = redisconn.Replicated(ctx, c.messages.Redis()) // the record survives a Redis failover
	}
	if err != nil {
		c.log.Warn("recording a dead-lettered event failed; trying later", "err", err, "event_id", ev.GetId())
		c.later(ctx, d)
		return
	}
	c.metrics.DeadLetter.Inc()
	c.metrics.Deliveries.WithLabelValues("dead_letter").Inc()
	c.log.Error("event dead-lettered", "event_id", m.ID, "tenant", tenant, "reason", reason)
	_ = d.Ack(false)
}

// HandleTask records a delivery task the broker dead-lettered as a dead
// letter of its delivery, unless it was delivered after all.
func (c *Consumer) HandleTask(ctx context.Context, d amqp.Delivery) {
	t, err := task.Decode(d)
	if err != nil {
		c.log.Error("dropping a dead-lettered task that cannot be read", "err", err, "message_id", d.MessageId, "reason", Reason(d))
		c.metrics.DeadLetter.Inc()
		_ = d.Ack(false)
		return
	}
	msg := t.Publishing()
	msg.Headers = amqp.Table{}
	for k, v := range d.Headers {
		msg.Headers[k] = v
	}
	if c.revive(ctx, d, c.queues.Deliveries, msg) {
		return
	}
	ctx = context.WithoutCancel(ctx)
	delivered, err := c.gate.Delivered(ctx, t.Endpoint, t.Message)
	if err == nil && delivered {
		err = c.messages.MarkDelivered(ctx, t.Tenant, t.Message, t.Endpoint, t.Total())
		if err == nil {
			err = redisconn.Replicated(ctx, c.messages.Redis())
		}
		if err == nil {
			_ = d.Ack(false)
			return
		}
	}
	reason := Reason(d)
	if err == nil {
		err = c.messages.Settle(ctx, t.Tenant, t.Message, t.Endpoint, message.Outcome{
			State:      message.Delivery{Status: message.StatusFailed, Attempts: t.Total()},
			DeadLetter: reason, At: time.Now(),
		})
	}
	if err == nil {
		err = redisconn.Replicated(ctx, c.messages.Redis()) // the record survives a Redis failover
	}
	if err != nil {
		c.log.Warn("recording a dead-lettered task failed; trying later", "err", err, "message_id", t.Message)
		c.later(ctx, d)
		return
	}
	c.metrics.DeadLetter.Inc()
	c.metrics.Deliveries.WithLabelValues("dead_letter").Inc()
	c.log.Error("delivery dead-lettered", "message_id", t.Message, "endpoint_id", t.Endpoint, "tenant", t.Tenant, "reason", reason)
	_ = d.Ack(false)
}
