package trace

import (
	"context"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// amqpCarrier reads and writes trace context in AMQP headers, as the
// OpenTelemetry messaging conventions do for RabbitMQ.
type amqpCarrier amqp.Table

func (c amqpCarrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func (c amqpCarrier) Set(key, value string) { c[key] = value }

func (c amqpCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// InjectAMQP writes ctx's trace context into h (the caller's own table). A
// context without a span leaves h as it is, so a traceparent the caller set
// survives.
func InjectAMQP(ctx context.Context, h amqp.Table) {
	if h == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	Propagator.Inject(ctx, amqpCarrier(h))
}

// ExtractAMQP returns ctx with the trace context found in h.
func ExtractAMQP(ctx context.Context, h amqp.Table) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return Propagator.Extract(ctx, amqpCarrier(h))
}

// consumeTracer is looked up once: the lookup takes a lock, and the
// global provider's tracer follows a provider installed later.
var consumeTracer = sync.OnceValue(Tracer)

// StartConsume extracts the trace context of d and starts a consumer span
// for handling it, child of the publisher's span. end finishes the span.
func StartConsume(ctx context.Context, queue string, d amqp.Delivery) (_ context.Context, end func()) {
	ctx = ExtractAMQP(ctx, d.Headers)
	if !exported.Load() {
		// As in Handler: only the span's ids are used (logs, the bus,
		// outbound requests), so it gets no name or attributes to build
		// for every message.
		ctx, span := consumeTracer().Start(ctx, "process", trace.WithSpanKind(trace.SpanKindConsumer))
		return ctx, func() { span.End() }
	}
	ctx, span := consumeTracer().Start(ctx, "process "+queue,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "rabbitmq"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", queue),
			attribute.String("messaging.rabbitmq.destination.routing_key", d.RoutingKey),
			attribute.String("messaging.message.id", d.MessageId),
			attribute.Bool("messaging.rabbitmq.redelivered", d.Redelivered),
		))
	return ctx, func() { span.End() }
}
