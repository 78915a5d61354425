package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/client"
)

// A read-through namespace in front of an origin, read through a client
// with a near cache.
func Example() {
	svc := startService() // a cache service in front of a local origin

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := grpc.NewClient(svc.GRPCAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(client.Credentials(svc.APIKey)))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	opt, _ := redis.ParseURL(svc.RedisURL)
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	c := client.New(conn, client.Options{Near: &client.NearOptions{Redis: rdb, Channel: svc.Channel, TTL: 30 * time.Second}})
	go c.Run(ctx)
	if err := c.WaitReady(ctx); err != nil {
		panic(err)
	}

	_, err = c.API().CreateNamespace(ctx, &cachev1.CreateNamespaceRequest{Namespace: &cachev1.Namespace{
		Name: "users", Strategy: "read_through", OriginUrl: svc.Origin + "/users/{key}", Ttl: durationpb.New(time.Minute),
	}})
	if err != nil {
		panic(err)
	}
	for _, step := range []string{"first read", "second read", "after invalidation"} {
		if step == "after invalidation" {
			if err := c.Invalidate(ctx, "users", "42"); err != nil {
				panic(err)
			}
		}
		e, err := c.Get(ctx, "users", "42")
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s: %q hit=%v near=%v\n", step, e.Value, e.Hit, e.Near)
	}
	// Output:
	// first read: "user 42" hit=false near=false
	// second read: "user 42" hit=true near=true
	// after invalidation: "user 42" hit=false near=false
}
