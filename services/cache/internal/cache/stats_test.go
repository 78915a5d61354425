package cache

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
)

// Hits and misses of GetKey and BatchGetKeys are counted per namespace of
// the tenant, across replicas.
func TestNamespaceStatsCountHitsAndMisses(t *testing.T) {
	h := newHarness(t, 2, false)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user %s", strings.TrimPrefix(r.URL.Path, "/users/"))
	})
	a, b := h.replicas[0], h.replicas[1]
	createNS(t, a, "acme", &cachev1.Namespace{Name: "users", Strategy: "read_through", OriginUrl: h.url("/users/{key}"), Ttl: durationpb.New(time.Minute)})
	for _, c := range []*Cache{a, b, b} { // miss, hit, hit
		if _, err := get(c, "acme", "users", "u1"); err != nil {
			t.Fatal(err)
		}
	}
	// u1 hits, u2 misses.
	if _, err := b.API.BatchGetKeys(tenantCtx("acme"), &cachev1.BatchGetKeysRequest{Ns: "users", Keys: []string{"u1", "u2"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Cache{a, b} {
		if err := c.API.Stats.Flush(tenantCtx("acme")); err != nil {
			t.Fatal(err)
		}
	}
	out, err := a.API.ListNamespaceStats(tenantCtx("acme"), &cachev1.ListNamespaceStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.GetStats()) != 1 {
		t.Fatalf("stats %v, want one namespace", out)
	}
	if st := out.GetStats()[0]; st.GetNamespace() != "users" || st.GetHitCount() != 3 || st.GetMissCount() != 2 || st.GetHitRatio() != 0.6 {
		t.Errorf("stats %v, want 3 hits and 2 misses (ratio 0.6)", st)
	}
	if other, err := a.API.ListNamespaceStats(tenantCtx("globex"), &cachev1.ListNamespaceStatsRequest{}); err != nil || len(other.GetStats()) != 0 {
		t.Errorf("another tenant sees %v, %v", other, err)
	}
}
