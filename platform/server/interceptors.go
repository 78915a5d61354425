package server

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	next := logging.UnaryServerInterceptor(logger,
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(code codes.Code) logging.Level {
			switch code {
			case codes.OK, codes.NotFound, codes.AlreadyExists, codes.InvalidArgument, codes.Unauthenticated, codes.FailedPrecondition:
				return logging.LevelInfo
			case codes.Internal, codes.Unknown, codes.DataLoss:
				return logging.LevelError
			}
			return logging.LevelWarn
		}),
		logging.WithFieldsFromContext(func(ctx context.Context) logging.Fields {
			if tenant, ok := auth.Tenant(ctx); ok {
				return logging.Fields{"tenant", tenant}
			}
			return nil
		}),
		// The cause behind an error whose status hides it (Unavailable).
		logging.WithErrorFields(func(err error) logging.Fields {
			if c := cause(err); c != nil {
				return logging.Fields{"cause", c.Error()}
			}
			return nil
		}),
	)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == healthCheck {
			return h(ctx, req)
		}
		return next(ctx, req, info, h)
	}
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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		reqs.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	})
}
