package cache

import (
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
)

// A hit costs exactly one Redis round trip: value, freshness, epoch and
// lease are read together by one script, and nothing else is asked on
// the way (the namespace comes from the replica's local copy).
func TestHitIsOneRedisRoundTrip(t *testing.T) {
	h := newHarness(t, 1, false)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("v")) })
	createNS(t, h.replicas[0], "acme", &cachev1.Namespace{Name: "users", OriginUrl: h.url("/{key}"), Ttl: durationpb.New(time.Hour)})

	rdb, err := redisconn.Open(redistest.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	count := &redistest.RoundTrips{}
	rdb.AddHook(count)
	c, err := New(h.cfg, Deps{Redis: rdb, AllowCIDRs: "127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	c.Namespaces.CacheTTL = time.Hour                       // no reload of the namespace during the count
	if _, err := get(c, "acme", "users", "1"); err != nil { // the fill, and the namespace's first lookup
		t.Fatal(err)
	}
	const hits = 50
	before := count.N()
	for range hits {
		e, err := get(c, "acme", "users", "1")
		if err != nil || !e.GetHit() {
			t.Fatalf("got %v, %v; want a hit", e, err)
		}
	}
	if got := count.N() - before; got != hits {
		t.Fatalf("%d hits took %d Redis round trips, want %d", hits, got, hits)
	}
}
