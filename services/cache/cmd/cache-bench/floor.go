package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/cache/client"
)

// The transport floor: a unary call that does nothing but answer a value
// of the hit's size. Measured on the cache replica's own server (every
// interceptor the hit goes through) and on bare servers, it shows which
// share of a hit is gRPC, which the interceptors, and which the cache.

// floorMethod is the no-op call: BytesValue in (the key), BytesValue out
// (the value), so the messages are about the size of GetKey's.
const floorMethod = "/hookyard.bench.Floor/Echo"

type floorServer interface{ echo() []byte }

type floor struct{ value []byte }

func (f *floor) echo() []byte { return f.value }

var floorDesc = grpc.ServiceDesc{
	ServiceName: "hookyard.bench.Floor",
	HandlerType: (*floorServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) {
				return &wrapperspb.BytesValue{Value: srv.(floorServer).echo()}, nil
			}
			if ic == nil {
				return h(ctx, in)
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: floorMethod}, h)
		},
	}},
}

// floorTarget is one server answering the no-op call, and a connection to it.
type floorTarget struct {
	name string
	cc   *grpc.ClientConn
}

// transport variants tried on a full Hookyard server, each on a server
// and connection of its own.
type variant struct {
	name   string
	server []grpc.ServerOption
	client []grpc.DialOption
}

func variants() []variant {
	return []variant{
		{name: "shared write buffer", server: []grpc.ServerOption{grpc.SharedWriteBuffer(true)}, client: []grpc.DialOption{grpc.WithSharedWriteBuffer(true)}},
		{name: "64 KiB read/write buffers",
			server: []grpc.ServerOption{grpc.WriteBufferSize(64 << 10), grpc.ReadBufferSize(64 << 10)},
			client: []grpc.DialOption{grpc.WithWriteBufferSize(64 << 10), grpc.WithReadBufferSize(64 << 10)}},
		{name: "static 1 MiB windows (no BDP pings)",
			server: []grpc.ServerOption{grpc.InitialWindowSize(1 << 20), grpc.InitialConnWindowSize(1 << 20)},
			client: []grpc.DialOption{grpc.WithInitialWindowSize(1 << 20), grpc.WithInitialConnWindowSize(1 << 20)}},
	}
}

// floorTargets starts the bare servers and the tuned Hookyard servers;
// the cache replica's own server is added by the caller.
func (e *env) floorTargets(ctx context.Context, log *slog.Logger) ([]floorTarget, error) {
	var out []floorTarget
	bare := func(name, network string, opts ...grpc.ServerOption) error {
		addr := "127.0.0.1:0"
		if network == "unix" {
			dir, err := os.MkdirTemp("", "cache-bench-")
			if err != nil {
				return err
			}
			e.later(func() { os.RemoveAll(dir) })
			addr = filepath.Join(dir, "floor.sock")
		}
		lis, err := net.Listen(network, addr)
		if err != nil {
			return err
		}
		s := grpc.NewServer(opts...)
		s.RegisterService(&floorDesc, &floor{value: e.value})
		go func() { _ = s.Serve(lis) }()
		e.later(s.Stop)
		target := lis.Addr().String()
		if network == "unix" {
			target = "unix://" + addr
		}
		cc, err := e.dial(target)
		if err != nil {
			return err
		}
		out = append(out, floorTarget{name: name, cc: cc})
		return nil
	}
	if err := bare("no-op gRPC, bare server", "tcp"); err != nil {
		return nil, err
	}
	// What a co-located caller could save by a Unix socket instead of TCP.
	if err := bare("no-op gRPC, bare server, Unix socket", "unix"); err != nil {
		return nil, err
	}
	if err := bare("no-op gRPC, bare + OTel stats handler", "tcp", grpc.StatsHandler(trace.ServerHandler())); err != nil {
		return nil, err
	}
	keys, err := auth.ParseKeys("bench:" + apiKey)
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	e.later(stop)
	for _, v := range variants() {
		srv := server.New(server.Options{Name: "floor", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Keys: keys, Log: log, GRPCOptions: v.server})
		srv.GRPC.RegisterService(&floorDesc, &floor{value: e.value})
		if err := srv.Listen(); err != nil {
			return nil, err
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Run(sctx) }()
		e.later(func() { stop(); <-done })
		cc, err := e.dial(srv.GRPCAddr(), v.client...)
		if err != nil {
			return nil, err
		}
		out = append(out, floorTarget{name: "no-op gRPC, Hookyard server, " + v.name, cc: cc})
	}
	return out, nil
}

// dial connects as the cache replicas' clients do.
func (e *env) dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(client.Credentials(apiKey))}, opts...)...)
	if err != nil {
		return nil, err
	}
	e.later(func() { cc.Close() })
	return cc, nil
}

// measureFloor measures the no-op call on t.
func (e *env) measureFloor(ctx context.Context, t floorTarget) (result, error) {
	req := &wrapperspb.BytesValue{Value: []byte("bench/hot")}
	// Wait for the server to answer before timing it.
	if err := waitFor(ctx, t.name, func() error {
		return t.cc.Invoke(ctx, floorMethod, req, new(wrapperspb.BytesValue))
	}); err != nil {
		return result{}, err
	}
	return measure(t.name, e.o.n, e.o.conc, func(int) error {
		out := new(wrapperspb.BytesValue)
		if err := t.cc.Invoke(ctx, floorMethod, req, out); err != nil {
			return err
		}
		if len(out.Value) != len(e.value) {
			return fmt.Errorf("echo answered %d bytes, want %d", len(out.Value), len(e.value))
		}
		return nil
	})
}
