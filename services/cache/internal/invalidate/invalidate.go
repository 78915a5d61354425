// Package invalidate turns events from hookyard.events into invalidations,
// by the rules of the event tenant's namespaces: an event whose routing key
// matches a rule's pattern invalidates the keys, tags and prefixes the
// rule's templates build from the event's JSON payload, and one matching a
// namespace's invalidate_on patterns invalidates the whole namespace.
//
// An event is acknowledged only after its invalidations are applied, so an
// event that was acknowledged has taken effect (DESIGN.md invariant 8).
package invalidate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/topic"
	"github.com/hookyard/hookyard/services/cache/internal/entries"
	"github.com/hookyard/hookyard/services/cache/internal/metrics"
	"github.com/hookyard/hookyard/services/cache/internal/namespace"
)

// RoutingKeyHeader carries an event's original routing key on a copy put
// back into the queue through the default exchange.
const RoutingKeyHeader = "x-hookyard-routing-key"

// Consumer applies events' invalidations.
type Consumer struct {
	Queue      string
	Exchange   string
	Bindings   []string
	Entries    *entries.Store
	Namespaces *namespace.Store
	Pub        interface {
		Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error
	}
	Metrics     *metrics.Metrics
	Log         *slog.Logger
	Concurrency int
	RetryDelay  time.Duration
}

// Declare declares the consumer's quorum queue, its DLQ and bindings.
func (c *Consumer) Declare(ch *amqp.Channel) error {
	return rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: c.Queue, Exchange: c.Exchange, Bindings: c.Bindings})
}

// Run consumes until ctx ends.
func (c *Consumer) Run(ctx context.Context, conn *rabbit.Conn) error {
	n := max(c.Concurrency, 1)
	return conn.ConsumeWithConfig(ctx, c.Queue, rabbit.ConsumeConfig{Prefetch: n, Concurrency: n, ShutdownGrace: 20 * time.Second}, c.Handle)
}

// Handle applies one event.
func (c *Consumer) Handle(ctx context.Context, d amqp.Delivery) {
	ev, err := cloudevent.FromDelivery(d)
	if err != nil {
		c.Metrics.Events.WithLabelValues("invalid").Inc()
		c.Log.ErrorContext(ctx, "event is not a binary-mode CloudEvent; sent to the DLQ", "err", err, "message_id", d.MessageId)
		_ = d.Reject(false)
		return
	}
	key := d.RoutingKey
	if k, ok := d.Headers[RoutingKeyHeader].(string); ok && k != "" {
		key = k
	}
	if key == "" {
		key = cloudevent.RoutingKey(ev.GetSource(), ev.GetType())
	}
	if ev.GetTenant() == "" {
		c.Metrics.Events.WithLabelValues("unmatched").Inc()
		_ = d.Ack(false)
		return
	}
	n, err := c.Apply(ctx, ev.GetTenant(), key, ev.GetData())
	if err != nil {
		c.Metrics.Events.WithLabelValues("error").Inc()
		c.Log.WarnContext(ctx, "invalidation failed; event put back", "err", err, "event_id", ev.GetId(), "tenant", ev.GetTenant())
		select {
		case <-time.After(c.RetryDelay):
		case <-ctx.Done():
		}
		c.putBack(ctx, d, key)
		return
	}
	if n == 0 {
		c.Metrics.Events.WithLabelValues("unmatched").Inc()
	} else {
		c.Metrics.Events.WithLabelValues("applied").Inc()
		c.Log.DebugContext(ctx, "event invalidated", "event_id", ev.GetId(), "tenant", ev.GetTenant(), "rules", n)
	}
	_ = d.Ack(false)
}

// putBack sends a copy of d to the tail of the queue (a requeue would
// count against the delivery limit, dead-lettering events during a short
// Redis outage) and acknowledges d; if the copy cannot be published, d is
// requeued.
func (c *Consumer) putBack(ctx context.Context, d amqp.Delivery, key string) {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[RoutingKeyHeader] = key
	err := c.Pub.Publish(ctx, "", c.Queue, amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, MessageId: d.MessageId, Type: d.Type,
		Timestamp: d.Timestamp, Body: d.Body,
	})
	if err != nil {
		_ = d.Nack(false, true)
		return
	}
	_ = d.Ack(false)
}

// Apply runs tenant's rules for an event with routing key and payload. It
// returns how many rules matched.
func (c *Consumer) Apply(ctx context.Context, tenant, routingKey string, payload []byte) (int, error) {
	recs, err := c.Namespaces.Tenant(ctx, tenant)
	if err != nil {
		return 0, err
	}
	var doc any
	parsed := false
	matched := 0
	for _, rec := range recs {
		n := c.Entries.NS(rec.ID)
		all := false
		for _, p := range rec.NS.GetInvalidateOn() {
			if topic.Match(p, routingKey) {
				all = true
				break
			}
		}
		if all {
			matched++
			if err := c.Entries.InvalidateAll(ctx, n); err != nil {
				return matched, err
			}
			c.Metrics.Invalidations.WithLabelValues("event").Inc()
			continue
		}
		for _, r := range rec.NS.GetInvalidationRules() {
			if !topic.Match(r.GetEventType(), routingKey) {
				continue
			}
			matched++
			if !parsed {
				parsed = true
				dec := json.NewDecoder(bytes.NewReader(payload))
				dec.UseNumber()
				if err := dec.Decode(&doc); err != nil {
					c.Log.WarnContext(ctx, "event payload is not JSON; its rules' templates cannot be filled", "err", err, "namespace", rec.NS.GetName())
					doc = nil
				}
			}
			if err := c.applyRule(ctx, rec, n, r.GetKeys(), r.GetTags(), r.GetPrefixes(), doc); err != nil {
				return matched, err
			}
		}
	}
	return matched, nil
}

func (c *Consumer) applyRule(ctx context.Context, rec *namespace.Record, n entries.NS, keys, tags, prefixes []string, doc any) error {
	expand := func(tmpls []string) []string {
		var out []string
		for _, s := range tmpls {
			t, err := namespace.ParseTemplate(s)
			if err == nil {
				var v string
				if v, err = t.Expand(doc); err == nil {
					out = append(out, v)
					continue
				}
			}
			c.Log.InfoContext(ctx, "invalidation template not filled by the event", "template", s, "namespace", rec.NS.GetName(), "err", err)
		}
		return out
	}
	if ks := expand(keys); len(ks) > 0 {
		if _, err := c.Entries.Invalidate(ctx, n, ks...); err != nil {
			return fmt.Errorf("invalidate keys: %w", err)
		}
		c.Metrics.Invalidations.WithLabelValues("event").Add(float64(len(ks)))
	}
	for _, t := range expand(tags) {
		if _, err := c.Entries.InvalidateTag(ctx, n, t); err != nil {
			return err
		}
		c.Metrics.Invalidations.WithLabelValues("event").Inc()
	}
	for _, p := range expand(prefixes) {
		if _, err := c.Entries.InvalidatePrefix(ctx, n, p); err != nil {
			return err
		}
		c.Metrics.Invalidations.WithLabelValues("event").Inc()
	}
	return nil
}
