// Package server is the runtime every Hookyard service shares: one gRPC
// server (health, reflection, recovery, logging, metrics and API-key auth)
// and one HTTP server (grpc-gateway, /healthz, /readyz, /metrics and any
// routes a service adds), with readiness that follows the backing services
// and a graceful shutdown.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	goruntime "runtime"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Check is a named readiness probe, e.g. "rabbitmq" or "redis".
type Check struct {
	Name string
	Fn   func(context.Context) error
}

// GatewayRegistrar registers a service's REST handlers on a connection to
// the server's services; GatewayHandler makes one of the generated code.
type GatewayRegistrar func(context.Context, *runtime.ServeMux, grpc.ClientConnInterface) error

// Options configure a Server.
type Options struct {
	Name            string
	GRPCAddr        string
	HTTPAddr        string
	Log             *slog.Logger
	Keys            auth.Keys
	Public          auth.Public
	Checks          []Check
	Registry        *prometheus.Registry
	ShutdownTimeout time.Duration
	// ReadyInterval is how often the gRPC health status follows the checks.
	ReadyInterval time.Duration

	// MaxBodyBytes caps a REST request body (default 1 MiB); a larger one
	// is answered 413.
	MaxBodyBytes int64
	// BodyMemoryBytes bounds the bytes all REST request bodies being read
	// and handled may hold at once (default 32 MiB). When it is spent a
	// request waits up to BodyWait (default 2s), then is answered 503 with
	// Retry-After.
	BodyMemoryBytes int64
	BodyWait        time.Duration

	// Connection timeouts; zero means the default in parentheses.
	// ReadHeaderTimeout (5s) is how long a client may take to send request
	// headers, IdleTimeout (60s) how long an HTTP keep-alive connection
	// may wait for its next request, and HandshakeTimeout (5s) how long a
	// new gRPC connection may take to complete its handshake. Slow or
	// silent clients would otherwise hold connections (and goroutines)
	// open for minutes.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	HandshakeTimeout  time.Duration

	// GRPCOptions are added after the server's own (transport tuning
	// tried by a benchmark); later options win. Interceptors added here
	// apply to gRPC calls only, not to REST calls.
	GRPCOptions []grpc.ServerOption
}

// Server is a service's network front.
type Server struct {
	opts    Options
	GRPC    *GRPCServer
	Gateway *runtime.ServeMux
	mux     *http.ServeMux
	health  *health.Server
	regs    []GatewayRegistrar
	bodies  *BodyBudget

	grpcLis, httpLis net.Listener
	httpSrv          *http.Server
	conn             *grpc.ClientConn
	// unary is the interceptor chain of unary calls, gRPC and REST.
	unary grpc.UnaryServerInterceptor

	mu    sync.Mutex
	ready bool
}

// New builds a Server. Register gRPC services on s.GRPC, REST handlers with
// RegisterGateway and extra HTTP routes with Handle, then call Run.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Public == nil {
		o.Public = auth.PublicPrefixes()
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 25 * time.Second
	}
	if o.ReadyInterval <= 0 {
		o.ReadyInterval = time.Second
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 5 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newRPCMetrics(o.Registry)
	s := &Server{
		opts:   o,
		mux:    http.NewServeMux(),
		health: health.NewServer(),
		bodies: NewBodyBudget(o.BodyMemoryBytes, o.BodyWait),
	}
	s.unary = chainUnary([]grpc.UnaryServerInterceptor{
		recovery.UnaryServerInterceptor(recoverOptions(o.Log)...),
		m.UnaryServerInterceptor(),
		o.Keys.UnaryInterceptor(o.Public),
		logUnary(o.Log),
	})
	s.GRPC = &GRPCServer{Server: grpc.NewServer(append([]grpc.ServerOption{
		grpc.StatsHandler(trace.ServerHandler()),
		grpc.ChainUnaryInterceptor(s.unary),
		grpc.ChainStreamInterceptor(
			recovery.StreamServerInterceptor(recoverOptions(o.Log)...),
			m.StreamServerInterceptor(),
			o.Keys.StreamInterceptor(o.Public),
		),
		// A REST body under the cap may grow when the gateway re-encodes
		// it (a JSON number becomes an 11-byte Value), so the limit left
		// room for that when REST calls came over loopback.
		grpc.MaxRecvMsgSize(int(max(4<<20, 8*o.MaxBodyBytes))),
		// Calls run on a pool of long-lived goroutines (one per core; a
		// call that finds them all busy gets a goroutine of its own, as
		// without the pool) instead of a new goroutine each, whose stack
		// was grown by copying on every call as it went down through the
		// interceptors into the Redis or RabbitMQ client.
		grpc.NumStreamWorkers(uint32(goruntime.GOMAXPROCS(0))),
		grpc.ConnectionTimeout(o.HandshakeTimeout),
		// Idle client connections are closed after a while (clients
		// reconnect transparently); keepalive pings find dead peers.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 5 * time.Minute,
			Time:              time.Minute,
			Timeout:           20 * time.Second,
		}),
	}, o.GRPCOptions...)...)}
	healthpb.RegisterHealthServer(s.GRPC, s.health)
	reflection.Register(s.GRPC)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	s.Gateway = runtime.NewServeMux(runtime.WithErrorHandler(gatewayError))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	s.mux.Handle("/", s.guardREST(withPeer(s.Gateway)))
	return s
}

// Registry is where the service registers its own metrics.
func (s *Server) Registry() *prometheus.Registry { return s.opts.Registry }

// Bodies is the budget REST request bodies are read under; a service's own
// routes that read bodies (webhooks) share it.
func (s *Server) Bodies() *BodyBudget { return s.bodies }

// RegisterGateway adds REST handlers. Their unary calls run in process
// through the gRPC server's own interceptor chain, so authentication,
// metrics and logging apply to both the same way (see localConn).
func (s *Server) RegisterGateway(r ...GatewayRegistrar) { s.regs = append(s.regs, r...) }

// Handle adds an HTTP route beside the gateway (e.g. "POST /webhooks/{source}").
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Listen binds both ports. It is separate from Run so that tests can bind
// ":0" and read the addresses before serving.
func (s *Server) Listen() error {
	var err error
	if s.grpcLis, err = net.Listen("tcp", s.opts.GRPCAddr); err != nil {
		return fmt.Errorf("grpc listen %s: %w", s.opts.GRPCAddr, err)
	}
	if s.httpLis, err = net.Listen("tcp", s.opts.HTTPAddr); err != nil {
		s.grpcLis.Close()
		return fmt.Errorf("http listen %s: %w", s.opts.HTTPAddr, err)
	}
	return nil
}

// GRPCAddr is the bound gRPC address (after Listen).
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address (after Listen).
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// dialTarget turns a listen address into one this process can dial.
func dialTarget(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		if ok {
			return fmt.Sprintf("127.0.0.1:%d", tcp.Port)
		}
	}
	return a.String()
}

// Run serves until ctx ends, then shuts down gracefully: health turns
// NOT_SERVING, the listeners close, in-flight requests finish (up to the
// shutdown timeout) and Run returns nil.
func (s *Server) Run(ctx context.Context) error {
	if s.grpcLis == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	// Only streams would use the loopback connection; it connects on
	// its first call.
	conn, err := grpc.NewClient(dialTarget(s.grpcLis.Addr()),
		grpc.WithTransportCredentials(insecure.NewCredentials()), trace.ClientOption())
	if err != nil {
		return fmt.Errorf("gateway dial: %w", err)
	}
	s.conn = conn
	local := newLocalConn(s.GRPC.services, s.unary, conn)
	for _, r := range s.regs {
		if err := r(ctx, s.Gateway, local); err != nil {
			return fmt.Errorf("gateway register: %w", err)
		}
	}
	s.httpSrv = &http.Server{
		Handler:           trace.Handler(httpMetrics(s.opts.Registry, s.mux)),
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		// A whole request, body included, must arrive within ReadTimeout.
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   60 * time.Second,
		IdleTimeout:    s.opts.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
	}

	errc := make(chan error, 2)
	go func() { errc <- s.GRPC.Serve(s.grpcLis) }()
	go func() {
		if err := s.httpSrv.Serve(s.httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()
	readyCtx, stopReady := context.WithCancel(ctx)
	defer stopReady()
	go s.followReadiness(readyCtx)
	s.opts.Log.Info("serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr())

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			s.shutdown()
			return fmt.Errorf("serve: %w", err)
		}
	}
	s.shutdown()
	return nil
}

func (s *Server) shutdown() {
	s.health.Shutdown()
	s.opts.Log.Info("shutting down", "timeout", s.opts.ShutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	if err := s.httpSrv.Shutdown(ctx); err != nil {
		s.opts.Log.Warn("http shutdown", "err", err)
	}
	done := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.GRPC.Stop()
	}
	if s.conn != nil {
		s.conn.Close()
	}
}

// checkAll runs every readiness check with a short deadline.
func (s *Server) checkAll(ctx context.Context) map[string]string {
	failed := map[string]string{}
	for _, c := range s.opts.Checks {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := c.Fn(cctx); err != nil {
			failed[c.Name] = err.Error()
		}
		cancel()
	}
	return failed
}

func (s *Server) followReadiness(ctx context.Context) {
	t := time.NewTicker(s.opts.ReadyInterval)
	defer t.Stop()
	for {
		failed := s.checkAll(ctx)
		ready := len(failed) == 0
		s.mu.Lock()
		changed := ready != s.ready
		s.ready = ready
		s.mu.Unlock()
		if changed {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if ready {
				st = healthpb.HealthCheckResponse_SERVING
			}
			s.health.SetServingStatus("", st)
			for name := range s.GRPC.GetServiceInfo() {
				s.health.SetServingStatus(name, st)
			}
			s.opts.Log.Info("readiness changed", "ready", ready, "failed", failed)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	failed := s.checkAll(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "unavailable", "failed": failed})
		return
	}
	_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
}
