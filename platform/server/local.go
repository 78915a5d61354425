package server

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/hookyard/hookyard/platform/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// GRPCServer is the gRPC server. It remembers the services registered on
// it, so that the REST gateway can call their unary methods in this
// process instead of over a loopback connection.
type GRPCServer struct {
	*grpc.Server
	services []service
}

type service struct {
	desc *grpc.ServiceDesc
	impl any
}

// RegisterService registers a service on the gRPC server (it is what the
// generated RegisterXServer functions call).
func (g *GRPCServer) RegisterService(desc *grpc.ServiceDesc, impl any) {
	g.Server.RegisterService(desc, impl)
	g.services = append(g.services, service{desc, impl})
}

// GatewayHandler makes a GatewayRegistrar of a service's generated
// RegisterXHandlerClient and NewXClient, e.g.
// GatewayHandler(ingressv1.RegisterSourceServiceHandlerClient, ingressv1.NewSourceServiceClient).
func GatewayHandler[C any](register func(context.Context, *runtime.ServeMux, C) error, client func(grpc.ClientConnInterface) C) GatewayRegistrar {
	return func(ctx context.Context, mux *runtime.ServeMux, cc grpc.ClientConnInterface) error {
		return register(ctx, mux, client(cc))
	}
}

// chainUnary composes interceptors into one, the first outermost, as
// grpc.ChainUnaryInterceptor does. The gRPC server and the in-process
// calls of the gateway run this one chain.
func chainUnary(ints []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return ints[0](ctx, req, info, chainedHandler(ints, 0, info, h))
	}
}

func chainedHandler(ints []grpc.UnaryServerInterceptor, i int, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) grpc.UnaryHandler {
	if i == len(ints)-1 {
		return h
	}
	return func(ctx context.Context, req any) (any, error) {
		return ints[i+1](ctx, req, info, chainedHandler(ints, i+1, info, h))
	}
}

// localMethod is a unary method of a registered service.
type localMethod struct {
	handler grpc.MethodHandler
	impl    any
}

// localConn is the gateway's connection to the services of this server. A
// unary call runs the method's handler here, through the server's unary
// interceptor chain (recovery, metrics, auth, logging), with what a call
// over the network would bring: incoming metadata, a peer, the deadline,
// a stream for grpc.SetHeader and its kin, a span. The request and reply
// are copied, as encoding them would. It saves the gateway's REST calls
// encoding, HTTP/2 framing and decoding twice over. Streams, which no
// REST route serves today, go over the loopback connection.
type localConn struct {
	methods  map[string]localMethod
	chain    grpc.UnaryServerInterceptor
	span     func(context.Context, string) (context.Context, func(codes.Code))
	loopback grpc.ClientConnInterface
}

func newLocalConn(services []service, chain grpc.UnaryServerInterceptor, loopback grpc.ClientConnInterface) *localConn {
	c := &localConn{methods: map[string]localMethod{}, chain: chain, span: trace.CallSpans(), loopback: loopback}
	for _, s := range services {
		for _, m := range s.desc.Methods {
			c.methods["/"+s.desc.ServiceName+"/"+m.MethodName] = localMethod{handler: m.Handler, impl: s.impl}
		}
	}
	return c
}

// NewStream opens a stream over the loopback connection.
func (c *localConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.loopback.NewStream(ctx, desc, method, opts...)
}

// Invoke runs a unary method in process.
func (c *localConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	m, ok := c.methods[method]
	if !ok {
		service, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
		return status.Errorf(codes.Unimplemented, "unknown method %v for service %v", name, service)
	}
	// A call whose caller is gone never reaches the server.
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	stream := &localStream{method: method}
	sctx, end := c.span(serverContext(ctx, stream), method)
	dec := func(in any) error {
		proto.Merge(in.(proto.Message), args.(proto.Message))
		return nil
	}
	resp, err := m.handler(m.impl, sctx, dec, c.chain)
	if err == nil && resp == nil {
		err = status.Error(codes.Internal, "grpc: error while marshaling: the handler returned no message")
	}
	if err != nil {
		// As the server sends it: a status, Unknown for an error that is
		// none, the context's code for a context error.
		st, ok := status.FromError(err)
		if !ok {
			st = status.FromContextError(err)
		}
		err = st.Err()
	}
	end(status.Code(err))
	header, trailer := stream.received(err == nil)
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = trailer
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The caller stopped waiting: it gets its context's error, as a
		// client does whatever the server answers after that.
		return status.FromContextError(ctxErr).Err()
	}
	if err != nil {
		return err
	}
	proto.Merge(reply.(proto.Message), resp.(proto.Message))
	return nil
}

// serverContext is the context a handler is called with: ctx's deadline,
// cancellation and values, the caller's outgoing metadata as incoming
// metadata (the gateway forwards headers, the API key among them, this
// way) and none outgoing, so that a handler calling on does not pass the
// caller's key along.
func serverContext(ctx context.Context, stream *localStream) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	ctx = metadata.NewOutgoingContext(ctx, nil)
	ctx = metadata.NewIncomingContext(ctx, md)
	if _, ok := peer.FromContext(ctx); !ok {
		ctx = peer.NewContext(ctx, inProcessPeer)
	}
	return grpc.NewContextWithServerTransportStream(ctx, stream)
}

// inProcessPeer is the peer of a call made in process by other than a REST
// request (whose peer is its HTTP client, see withPeer).
var inProcessPeer = &peer.Peer{Addr: inProcessAddr{}, LocalAddr: inProcessAddr{}}

type inProcessAddr struct{}

func (inProcessAddr) Network() string { return "inprocess" }
func (inProcessAddr) String() string  { return "inprocess" }

// withPeer puts the HTTP client's address in a REST request's context as
// the gRPC peer, which the call log shows.
func withPeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := &peer.Peer{Addr: httpAddr(r.RemoteAddr)}
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			p.LocalAddr = a
		}
		next.ServeHTTP(w, r.WithContext(peer.NewContext(r.Context(), p)))
	})
}

// httpAddr is an HTTP client's address as http.Request.RemoteAddr has it.
type httpAddr string

func (httpAddr) Network() string  { return "tcp" }
func (a httpAddr) String() string { return string(a) }

// localStream takes what a handler sets with grpc.SetHeader, SendHeader and
// SetTrailer.
type localStream struct {
	method string

	mu              sync.Mutex
	header, trailer metadata.MD
	headerSent      bool
}

func (s *localStream) Method() string { return s.method }

func (s *localStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headerSent {
		return errHeaderSent
	}
	s.header = join(s.header, md)
	return nil
}

func (s *localStream) SendHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headerSent {
		return errHeaderSent
	}
	s.header, s.headerSent = join(s.header, md), true
	return nil
}

func (s *localStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trailer = join(s.trailer, md)
	return nil
}

// errHeaderSent is the gRPC server's error for headers set after they
// were sent.
var errHeaderSent = status.Error(codes.Internal, "transport: SendHeader called multiple times")

// join adds md to to, with keys in lower case as they travel.
func join(to, md metadata.MD) metadata.MD {
	if len(md) == 0 {
		return to
	}
	if to == nil {
		to = make(metadata.MD, len(md))
	}
	for k, v := range md {
		k = strings.ToLower(k)
		to[k] = append(to[k], v...)
	}
	return to
}

// received is the header and trailer metadata a client gets over the
// network: the server's content type comes with them (and the gateway
// forwards it as Grpc-Metadata-Content-Type or Grpc-Trailer-Content-Type),
// in the headers, or in the trailers of an error answered with trailers
// only (no header set).
func (s *localStream) received(ok bool) (header, trailer metadata.MD) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ct := metadata.MD{"content-type": {"application/grpc"}}
	if ok || s.headerSent || len(s.header) > 0 {
		return join(ct, s.header), join(nil, s.trailer)
	}
	return metadata.MD{}, join(ct, s.trailer)
}
