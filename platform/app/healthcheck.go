package app

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// HealthCheck asks the service listening on grpcAddr for its gRPC health
// and returns nil only if it is SERVING. A listen address such as ":9090"
// is dialled on loopback. It lets a container image probe its own service
// without shipping grpcurl.
func HealthCheck(ctx context.Context, grpcAddr string) error {
	host, port, err := net.SplitHostPort(grpcAddr)
	if err != nil {
		return fmt.Errorf("healthcheck: grpc address %q: %w", grpcAddr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	conn, err := grpc.NewClient(net.JoinHostPort(host, port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", net.JoinHostPort(host, port), err)
	}
	if st := res.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("healthcheck %s: %s", net.JoinHostPort(host, port), st)
	}
	return nil
}
