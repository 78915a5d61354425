package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/client"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

// A write made through the service by someone else drops the client's near
// copy through the service's notice.
func TestNearCopyFollowsOtherWriters(t *testing.T) {
	svc := startService()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := grpc.NewClient(svc.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(client.Credentials(svc.APIKey)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	opt, _ := redis.ParseURL(svc.RedisURL)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	c := client.New(conn, client.Options{Near: &client.NearOptions{Redis: rdb, Channel: svc.Channel, TTL: time.Minute}})
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.API().CreateNamespace(ctx, &cachev1.CreateNamespaceRequest{Namespace: &cachev1.Namespace{Name: "kv", Strategy: "cache_aside"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, "kv", "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "a near copy", func() bool {
		e, err := c.Get(ctx, "kv", "k")
		return err == nil && e.Near && string(e.Value) == "v1"
	})
	// Another writer, not through this client.
	other := cachev1.NewCacheServiceClient(conn)
	if _, err := other.PutKey(ctx, &cachev1.PutKeyRequest{Ns: "kv", Key: "k", Entry: &cachev1.Entry{Value: []byte("v2")}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the notice to drop the copy", func() bool {
		e, err := c.Get(ctx, "kv", "k")
		return err == nil && string(e.Value) == "v2"
	})
}
