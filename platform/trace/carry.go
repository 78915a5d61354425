package trace

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Carry returns ctx's W3C traceparent, or "" without a span. It is for
// work that outlives its request and is stored before it runs (a task, a
// scheduled callback): the stored value lets the work join the trace that
// caused it.
func Carry(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// Resume returns ctx joined to the trace a Carry value names. An empty or
// malformed value leaves ctx as it is: a stored value from an older
// version must not fail the work.
func Resume(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}
