// Package cache wires the cache service. Read-through, write-through and
// invalidation land in a later change; until then the API is declared and
// every method answers Unimplemented.
package cache

import (
	"context"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/platform/config"
)

type api struct {
	cachev1.UnimplementedCacheServiceServer
}

// Service describes the cache binary.
func Service() app.Service {
	return app.Service{
		Name:  "cache",
		Ports: config.Ports{HTTP: ":8082", GRPC: ":9092"},
		Build: func(_ context.Context, rt *app.Runtime) error {
			cachev1.RegisterCacheServiceServer(rt.Server.GRPC, api{})
			rt.Server.RegisterGateway(cachev1.RegisterCacheServiceHandler)
			return nil
		},
	}
}
