package cache

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

// A value copied into one replica's near cache is dropped there when
// another replica invalidates or overwrites it.
func TestNearCacheFollowsOtherReplicas(t *testing.T) {
	h := newHarness(t, 2, false)
	a, b := h.replicas[0], h.replicas[1]
	createNS(t, a, "acme", &cachev1.Namespace{Name: "users", Strategy: "cache_aside",
		NearCache: &cachev1.NearCache{MaxEntries: 100, Ttl: durationpb.New(time.Minute)}})
	if _, err := put(a, "acme", "users", "1", "v1"); err != nil {
		t.Fatal(err)
	}
	nearHits := func() float64 { return testutil.ToFloat64(b.API.Metrics.Gets.WithLabelValues("near_hit")) }
	testenv.WaitFor(t, 10*time.Second, "a near-cache hit on the other replica", func() bool {
		e, err := get(b, "acme", "users", "1")
		return err == nil && string(e.GetValue()) == "v1" && nearHits() > 0
	})
	if _, err := put(a, "acme", "users", "1", "v2"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the overwrite to reach the other replica", func() bool {
		e, err := get(b, "acme", "users", "1")
		return err == nil && string(e.GetValue()) == "v2"
	})
	testenv.WaitFor(t, 10*time.Second, "v2 in the near cache", func() bool {
		before := nearHits()
		_, err := get(b, "acme", "users", "1")
		return err == nil && nearHits() > before
	})
	if _, err := a.API.InvalidateNamespace(tenantCtx("acme"), &cachev1.InvalidateNamespaceRequest{Ns: "users", Keys: []string{"1"}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the invalidation to reach the other replica", func() bool {
		_, err := get(b, "acme", "users", "1")
		return status.Code(err) == codes.NotFound
	})
}
