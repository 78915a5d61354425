package trace

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
)

// InjectHTTP sets traceparent (and tracestate, baggage) on an outbound
// request's headers from ctx.
func InjectHTTP(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	Propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// Handler starts a server span for every request, child of the caller's
// traceparent when it sends one, and names it after the matched route.
func Handler(next http.Handler) http.Handler {
	// Looked up once: the global provider's tracer follows a provider
	// installed later, and the lookup takes a lock on every call.
	tracer := Tracer()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		if !exported.Load() {
			// Nothing reads a span's name and attributes unless it is
			// exported; its ids still go into logs and onto the bus.
			ctx, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer))
			next.ServeHTTP(w, r.WithContext(ctx))
			span.End()
			return
		}
		ctx, span := tracer.Start(ctx, r.Method,
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("http.request.method", r.Method),
				attribute.String("url.path", r.URL.Path),
			))
		defer span.End()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		r = r.WithContext(ctx)
		next.ServeHTTP(rec, r)
		if r.Pattern != "" {
			span.SetName(r.Pattern)
			span.SetAttributes(attribute.String("http.route", r.Pattern))
		}
		span.SetAttributes(attribute.Int("http.response.status_code", rec.code))
		if rec.code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(rec.code))
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code    int
	written bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.written {
		s.code, s.written = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.written = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flush,
// deadlines).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ServerHandler is the gRPC server's stats handler: it extracts trace
// context from incoming metadata and starts a server span per call. Health
// checks are left out (probes call them every few seconds).
func ServerHandler() stats.Handler {
	return otelgrpc.NewServerHandler(
		otelgrpc.WithPropagators(Propagator),
		otelgrpc.WithFilter(func(i *stats.RPCTagInfo) bool {
			return i.FullMethodName != "/grpc.health.v1.Health/Check" && i.FullMethodName != "/grpc.health.v1.Health/Watch"
		}),
	)
}

// ClientOption makes a gRPC client (the REST gateway's loopback
// connection, for streams) send the caller's trace context on.
func ClientOption() grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithPropagators(Propagator)))
}

// CallSpans returns the function that starts the span of a gRPC call
// served in this process without the network (the REST gateway's calls),
// the span ServerHandler starts for one that came over it; end records
// the call's code and ends the span.
func CallSpans() func(ctx context.Context, fullMethod string) (_ context.Context, end func(grpccodes.Code)) {
	tracer := Tracer() // once, as in Handler
	return func(ctx context.Context, fullMethod string) (context.Context, func(grpccodes.Code)) {
		name := strings.TrimPrefix(fullMethod, "/")
		if !exported.Load() {
			ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
			return ctx, func(grpccodes.Code) { span.End() }
		}
		service, method, _ := strings.Cut(name, "/")
		ctx, span := tracer.Start(ctx, name,
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("rpc.system", "grpc"),
				attribute.String("rpc.service", service),
				attribute.String("rpc.method", method),
			))
		return ctx, func(code grpccodes.Code) {
			span.SetAttributes(attribute.Int64("rpc.grpc.status_code", int64(code)))
			if serverFault(code) {
				span.SetStatus(codes.Error, code.String())
			}
			span.End()
		}
	}
}

// serverFault reports whether code is the server's fault, which marks a
// server span as failed (as otelgrpc marks it).
func serverFault(code grpccodes.Code) bool {
	switch code {
	case grpccodes.Unknown, grpccodes.DeadlineExceeded, grpccodes.Unimplemented,
		grpccodes.Internal, grpccodes.Unavailable, grpccodes.DataLoss:
		return true
	}
	return false
}
