package endpoint

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// A full cache drops the tenants used least recently, not every tenant at
// once (which would send all of them to Redis together).
func TestCacheKeepsBusyTenantsWhenFull(t *testing.T) {
	prefix := testenv.KeyPrefix(testenv.ID())
	s := New(testenv.Redis(t, prefix), prefix)
	ctx := context.Background()
	read := func(tenant string) {
		t.Helper()
		if _, err := s.all(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	read("busy")
	for i := range cacheSize + 10 {
		read(fmt.Sprintf("t%d", i))
		if i%1000 == 0 {
			read("busy")
		}
	}
	if !s.cache.Contains("busy") {
		t.Fatal("the busy tenant was dropped from a full cache")
	}
	if s.cache.Len() > cacheSize {
		t.Fatalf("cache holds %d tenants, more than %d", s.cache.Len(), cacheSize)
	}
}

// zrangeCounter counts ZRANGE commands (each one is a read of a tenant's
// endpoint list), holding each a while so that concurrent readers meet.
type zrangeCounter struct{ n atomic.Int32 }

func (c *zrangeCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *zrangeCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c *zrangeCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "zrange" {
			c.n.Add(1)
			time.Sleep(200 * time.Millisecond)
		}
		return next(ctx, cmd)
	}
}

// Readers that find a tenant's copy expired at the same time share one
// read of it instead of each reading all of the tenant's endpoints.
func TestExpiredCopyIsReadOnce(t *testing.T) {
	prefix := testenv.KeyPrefix(testenv.ID())
	rdb := testenv.Redis(t, prefix)
	s := New(rdb, prefix)
	ctx := context.Background()
	ep, err := s.Create(ctx, "acme", &dispatcherv1.Endpoint{Url: "https://example.com/hook"})
	if err != nil {
		t.Fatal(err)
	}
	var reads zrangeCounter
	rdb.AddHook(&reads)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			<-start
			if _, err := s.Cached(ctx, "acme", ep.GetId()); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := reads.n.Load(); n > 5 {
		t.Fatalf("50 concurrent readers of an expired copy read the endpoints %d times", n)
	}
}
