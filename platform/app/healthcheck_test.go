package app

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestHealthCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ctx := context.Background()

	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if err := HealthCheck(ctx, ":"+port); err == nil || !strings.Contains(err.Error(), "NOT_SERVING") {
		t.Fatalf("not serving: %v, want an error saying NOT_SERVING", err)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if err := HealthCheck(ctx, ":"+port); err != nil { // a listen address, dialled on loopback
		t.Fatalf("serving: %v", err)
	}
	srv.Stop()
	if err := HealthCheck(ctx, "127.0.0.1:"+port); err == nil {
		t.Fatal("nothing listening: no error")
	}
	if err := HealthCheck(ctx, "no-port"); err == nil {
		t.Fatal("bad address: no error")
	}
}
