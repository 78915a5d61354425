// Package trace carries W3C trace context (traceparent, tracestate) through
// Hookyard with OpenTelemetry: from an incoming HTTP or gRPC request into the
// AMQP headers of what a service publishes, out of them again in every
// consumer, and onto outbound HTTP requests (deliveries, http tasks, origin
// reads), so one trace id follows a webhook from ingress to the subscriber.
// Log records written with a context carry its trace_id and span_id.
//
// Spans are exported with OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; without it trace ids are still
// made and propagated, and nothing leaves the process.
package trace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Propagator is the W3C trace context and baggage propagator.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

const instrumentation = "github.com/hookyard/hookyard/platform/trace"

// Tracer is the tracer of Hookyard's own spans. It is the global
// provider's: OpenTelemetry instrumentation finds its provider there, so
// Setup installs it once per process, like the Prometheus default
// registry; without Setup spans are not recorded but contexts still
// propagate.
func Tracer() trace.Tracer { return otel.Tracer(instrumentation) }

// exported is set once Setup installed an exporter: only then are spans
// given the details that cost time on every request.
var exported atomic.Bool

// Exporting reports whether the environment asks for OTLP export.
func Exporting() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs the tracer provider of service and the W3C propagator, and
// returns the function that flushes and stops them. The sampler and the
// exporter's settings follow the standard OTEL_* variables
// (OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS, …).
func Setup(ctx context.Context, service string) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(Propagator)
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if Exporting() {
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	exported.Store(Exporting())
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	return func(ctx context.Context) error {
		return errors.Join(tp.ForceFlush(ctx), tp.Shutdown(ctx))
	}, nil
}

// IDs returns the trace and span id of ctx's span, empty if it has none.
func IDs(ctx context.Context) (traceID, spanID string) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return "", ""
	}
	return sc.TraceID().String(), sc.SpanID().String()
}
