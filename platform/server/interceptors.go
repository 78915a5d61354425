package server

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// recoverOptions turn a panic in one handler into an Internal error for
// that call, logged with its stack: it costs one request, not the process.
func recoverOptions(log *slog.Logger) []recovery.Option {
	return []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		log.Error("panic", "method", method, "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})}
}

const healthCheck = "/grpc.health.v1.Health/Check"

// logUnary logs every call once it finished. It runs after auth so that the
// log line carries the tenant; refused calls are visible in the
// grpc_server_handled_total metric instead, which keeps a key guessing
// client from flooding the log. Health checks (probes) are not logged.
//
// The level follows the code (logLevel) and is checked before any field
// is built: a call whose line the logger would discard costs a clock read
// and nothing else, no allocation (a cache hit is a few tens of
// microseconds, and building the line took a noticeable share of it).
func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == healthCheck {
			return h(ctx, req)
		}
		start := time.Now()
		resp, err := h(ctx, req)
		code := status.Code(err)
		lvl := logLevel(code)
		if !log.Enabled(ctx, lvl) {
			return resp, err
		}
		log.LogAttrs(ctx, lvl, "finished call", callAttrs(ctx, info.FullMethod, start, code, err)...)
		return resp, err
	}
}

// logLevel is the level of a finished call's line: a success is Debug
// (at Info a busy service, a cache answering hits, wrote a line per call),
// what clients get wrong is Info, what may need a look is Warn, what is
// broken is Error.
func logLevel(code codes.Code) slog.Level {
	switch code {
	case codes.OK:
		return slog.LevelDebug
	case codes.NotFound, codes.AlreadyExists, codes.InvalidArgument, codes.Unauthenticated, codes.FailedPrecondition:
		return slog.LevelInfo
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return slog.LevelError
	}
	return slog.LevelWarn
}

// callAttrs are a finished call's log fields, named as the
// go-grpc-middleware logging interceptor names them (which these lines
// came from before), so that log queries keep working.
func callAttrs(ctx context.Context, fullMethod string, start time.Time, code codes.Code, err error) []slog.Attr {
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	attrs := make([]slog.Attr, 0, 14)
	if tenant, ok := auth.Tenant(ctx); ok {
		attrs = append(attrs, slog.String("tenant", tenant))
	}
	attrs = append(attrs,
		slog.String("protocol", "grpc"),
		slog.String("grpc.component", "server"),
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.method_type", "unary"),
	)
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
	}
	attrs = append(attrs, slog.String("grpc.start_time", start.Format(time.RFC3339)))
	if d, ok := ctx.Deadline(); ok {
		attrs = append(attrs, slog.String("grpc.request.deadline", d.Format(time.RFC3339)))
	}
	attrs = append(attrs, slog.String("grpc.code", code.String()))
	if err != nil {
		attrs = append(attrs, slog.String("grpc.error", err.Error()))
		// The cause behind an error whose status hides it (Unavailable).
		if c := cause(err); c != nil {
			attrs = append(attrs, slog.String("cause", c.Error()))
		}
	}
	ms := float64(time.Since(start)/time.Microsecond) / 1000
	return append(attrs, slog.String("grpc.time_ms", strconv.FormatFloat(ms, 'f', -1, 64)))
}

// newRPCMetrics registers the standard grpc_server_* metrics (started,
// handled by code, messages, handling time) on reg.
func newRPCMetrics(reg prometheus.Registerer) *grpcprom.ServerMetrics {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets(prometheus.ExponentialBuckets(0.0005, 2, 16)),
	))
	reg.MustRegister(m)
	return m
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// httpMetrics counts requests by matched route pattern, which keeps label
// cardinality bounded whatever paths clients send.
func httpMetrics(reg prometheus.Registerer, next http.Handler) http.Handler {
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hookyard_http_requests_total",
		Help: "HTTP requests, by route pattern and status code.",
	}, []string{"route", "code"})
	reg.MustRegister(reqs)
	// Each (route, code) series is looked up once: a lookup by label
	// values hashes them, and the code would be formatted every time.
	type series struct {
		route string
		code  int
	}
	var counters sync.Map // series -> prometheus.Counter
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		k := series{route, rec.code}
		c, ok := counters.Load(k)
		if !ok {
			c, _ = counters.LoadOrStore(k, reqs.WithLabelValues(route, strconv.Itoa(rec.code)))
		}
		c.(prometheus.Counter).Inc()
	})
}
