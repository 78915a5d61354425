package cache

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

// A hot key is refreshed before it expires (XFetch), so readers keep
// hitting instead of meeting a miss.
func TestHotKeyIsRefreshedEarly(t *testing.T) {
	for _, beta := range []float64{0, 10} {
		t.Run(fmt.Sprint("beta=", beta), func(t *testing.T) {
			h := newHarness(t, 1, false)
			var calls atomic.Int64
			h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(300 * time.Millisecond)
				fmt.Fprintf(w, "v%d", calls.Add(1))
			})
			c := h.replicas[0]
			createNS(t, c, "acme", &cachev1.Namespace{Name: "hot", OriginUrl: h.url("/{key}"), Ttl: durationpb.New(time.Minute), EarlyRefreshBeta: beta})
			if _, err := get(c, "acme", "hot", "k"); err != nil {
				t.Fatal(err)
			}
			if beta == 0 {
				for range 20 {
					if _, err := get(c, "acme", "hot", "k"); err != nil {
						t.Fatal(err)
					}
				}
				if n := testutil.ToFloat64(c.API.Metrics.EarlyRefresh); n != 0 {
					t.Fatalf("%v early refreshes with early refresh off", n)
				}
				return
			}
			// With beta 10 and a 300 ms fill, a minute's TTL is far: few
			// refreshes. Shorten the remaining life by storing with a short
			// TTL and let the reads find it near expiry.
			if _, err := c.API.UpdateNamespace(tenantCtx("acme"), &cachev1.UpdateNamespaceRequest{Namespace: &cachev1.Namespace{Name: "hot", Ttl: durationpb.New(3 * time.Second)}}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.API.InvalidateNamespace(tenantCtx("acme"), &cachev1.InvalidateNamespaceRequest{Ns: "hot", Keys: []string{"k"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := get(c, "acme", "hot", "k"); err != nil {
				t.Fatal(err)
			}
			first := calls.Load()
			testenv.WaitFor(t, 20*time.Second, "an early refresh", func() bool {
				e, err := get(c, "acme", "hot", "k")
				return err == nil && e.GetHit() && calls.Load() > first
			})
			if testutil.ToFloat64(c.API.Metrics.EarlyRefresh) == 0 {
				t.Fatal("refreshed, but not counted as early")
			}
		})
	}
}

func TestBatchGetKeys(t *testing.T) {
	h := newHarness(t, 1, false)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, r.URL.Path)
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", OriginUrl: h.url("/{key}")})
	resp, err := c.API.BatchGetKeys(tenantCtx("acme"), &cachev1.BatchGetKeysRequest{Ns: "users", Keys: []string{"a", "missing", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	rs := resp.GetResults()
	if len(rs) != 3 || string(rs[0].GetEntry().GetValue()) != "/a" || rs[1].GetErrorCode() != "NOT_FOUND" || string(rs[2].GetEntry().GetValue()) != "/b" {
		t.Fatalf("results %v", rs)
	}
	if _, err := c.API.BatchGetKeys(tenantCtx("acme"), &cachev1.BatchGetKeysRequest{Ns: "users"}); err == nil {
		t.Fatal("an empty batch was accepted")
	}
}
