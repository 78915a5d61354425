package cache

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

func createNS(t *testing.T, c *Cache, tenant string, ns *cachev1.Namespace) {
	t.Helper()
	if _, err := c.API.CreateNamespace(tenantCtx(tenant), &cachev1.CreateNamespaceRequest{Namespace: ns}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
}

func get(c *Cache, tenant, ns, key string) (*cachev1.Entry, error) {
	return c.API.GetKey(tenantCtx(tenant), &cachev1.GetKeyRequest{Ns: ns, Key: key})
}

func mustCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("got %v, want code %v", err, want)
	}
}

func TestReadThroughMissThenHit(t *testing.T) {
	h := newHarness(t, 1, false)
	var calls atomic.Int64
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		fmt.Fprintf(w, "user %s", strings.TrimPrefix(r.URL.EscapedPath(), "/users/"))
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "read_through", OriginUrl: h.url("/users/{key}"), Ttl: durationpb.New(time.Minute)})

	e, err := get(c, "acme", "users", "a/b")
	if err != nil {
		t.Fatal(err)
	}
	if e.GetHit() || string(e.GetValue()) != "user a%2Fb" {
		t.Fatalf("first read: hit=%v value=%q, want a miss with the escaped key", e.GetHit(), e.GetValue())
	}
	e, err = get(c, "acme", "users", "a/b")
	if err != nil {
		t.Fatal(err)
	}
	if !e.GetHit() || e.GetStale() || string(e.GetValue()) != "user a%2Fb" || e.GetAge() == nil {
		t.Fatalf("second read: %v", e)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("origin called %d times, want 1", n)
	}
}

// Invariant 8: an origin load that started before an invalidation must not
// be stored after it, and the read must not return it.
func TestFillRacingInvalidationIsNotStored(t *testing.T) {
	for _, how := range []string{"key", "tag", "prefix", "all"} {
		t.Run(how, func(t *testing.T) {
			h := newHarness(t, 1, false)
			c := h.replicas[0]
			var calls atomic.Int64
			started := make(chan struct{})
			release := make(chan struct{})
			h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				w.Header().Set("Cache-Tag", "team:7")
				if n == 1 {
					close(started)
					<-release
					fmt.Fprint(w, "old")
					return
				}
				fmt.Fprint(w, "new")
			})
			createNS(t, c, "acme", &cachev1.Namespace{Name: "users", OriginUrl: h.url("/users/{key}"), Ttl: durationpb.New(time.Hour)})

			type result struct {
				e   *cachev1.Entry
				err error
			}
			done := make(chan result, 1)
			go func() {
				e, err := get(c, "acme", "users", "user:42")
				done <- result{e, err}
			}()
			<-started // the fill has loaded "old" from the origin's point of view
			req := &cachev1.InvalidateNamespaceRequest{Ns: "users"}
			switch how {
			case "key":
				req.Keys = []string{"user:42"}
			case "tag":
				req.Tags = []string{"team:7"}
			case "prefix":
				req.Prefixes = []string{"user:"}
			case "all":
				req.All = true
			}
			if _, err := c.API.InvalidateNamespace(tenantCtx("acme"), req); err != nil {
				t.Fatal(err)
			}
			close(release) // the origin now answers the pre-invalidation value

			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if string(r.e.GetValue()) != "new" {
				t.Fatalf("read racing the invalidation returned %q, want the value loaded after it", r.e.GetValue())
			}
			e, err := get(c, "acme", "users", "user:42")
			if err != nil {
				t.Fatal(err)
			}
			if string(e.GetValue()) != "new" || !e.GetHit() {
				t.Fatalf("cache holds %q (hit=%v), want \"new\"", e.GetValue(), e.GetHit())
			}
		})
	}
}

// N concurrent readers of one cold key on two replicas: one origin load.
func TestStampedeAcrossReplicas(t *testing.T) {
	h := newHarness(t, 2, false)
	var calls atomic.Int64
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		time.Sleep(300 * time.Millisecond)
		fmt.Fprint(w, "v")
	})
	createNS(t, h.replicas[0], "acme", &cachev1.Namespace{Name: "hot", OriginUrl: h.url("/{key}")})
	const readers = 200
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := get(h.replicas[i%2], "acme", "hot", "k")
			if err == nil && string(e.GetValue()) != "v" {
				err = fmt.Errorf("value %q", e.GetValue())
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("origin loaded %d times for %d readers on 2 replicas, want 1", n, readers)
	}
}

func TestOriginNotFoundIsRemembered(t *testing.T) {
	h := newHarness(t, 1, false)
	var calls atomic.Int64
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.NotFound(w, r)
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", OriginUrl: h.url("/{key}"), NegativeTtl: durationpb.New(time.Minute)})
	for range 3 {
		_, err := get(c, "acme", "users", "nobody")
		mustCode(t, err, codes.NotFound)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("origin called %d times, want 1 (the 404 is remembered)", n)
	}
}

func TestOriginErrorWithoutStaleIsUnavailable(t *testing.T) {
	h := newHarness(t, 1, false)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", OriginUrl: h.url("/{key}")})
	_, err := get(c, "acme", "users", "1")
	mustCode(t, err, codes.Unavailable)
	if !strings.Contains(err.Error(), "502") {
		t.Fatalf("error %v does not say what the origin answered", err)
	}
}

func TestOriginTimeoutIsUnavailable(t *testing.T) {
	h := newHarness(t, 1, false)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", OriginUrl: h.url("/{key}"), Timeout: durationpb.New(300 * time.Millisecond)})
	_, err := get(c, "acme", "users", "1")
	mustCode(t, err, codes.Unavailable)
	if !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("error %v does not say the origin timed out", err)
	}
}

func TestOriginErrorServesStaleWithinWindow(t *testing.T) {
	for _, swr := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("swr=", swr), func(t *testing.T) {
			h := newHarness(t, 1, false)
			var down atomic.Bool
			h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
				if down.Load() {
					http.Error(w, "down", http.StatusServiceUnavailable)
					return
				}
				fmt.Fprint(w, "v1")
			})
			c := h.replicas[0]
			createNS(t, c, "acme", &cachev1.Namespace{
				Name: "users", OriginUrl: h.url("/{key}"), Ttl: durationpb.New(200 * time.Millisecond),
				StaleWhileRevalidate: durationpb.New(swr),
			})
			if _, err := get(c, "acme", "users", "1"); err != nil {
				t.Fatal(err)
			}
			down.Store(true)
			time.Sleep(400 * time.Millisecond) // past the TTL
			e, err := get(c, "acme", "users", "1")
			if swr == 0 {
				mustCode(t, err, codes.Unavailable)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(e.GetValue()) != "v1" || !e.GetStale() {
				t.Fatalf("got %q stale=%v, want the stale v1", e.GetValue(), e.GetStale())
			}
		})
	}
}

// A stale value is refreshed in the background and the next read sees the
// new one.
func TestStaleIsRefreshed(t *testing.T) {
	h := newHarness(t, 1, false)
	var calls atomic.Int64
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "v%d", calls.Add(1)) })
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{
		Name: "users", OriginUrl: h.url("/{key}"), Ttl: durationpb.New(200 * time.Millisecond),
		StaleWhileRevalidate: durationpb.New(time.Hour),
	})
	if _, err := get(c, "acme", "users", "1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	e, err := get(c, "acme", "users", "1")
	if err != nil || string(e.GetValue()) != "v1" || !e.GetStale() {
		t.Fatalf("got %v %v, want stale v1", e, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the background refresh", func() bool {
		e, err := get(c, "acme", "users", "1")
		return err == nil && string(e.GetValue()) == "v2" && !e.GetStale()
	})
}

func TestOriginValueTooLarge(t *testing.T) {
	h := newHarness(t, 1, false)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 2048)) })
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", OriginUrl: h.url("/{key}"), MaxValueBytes: 1024})
	_, err := get(c, "acme", "users", "1")
	mustCode(t, err, codes.Unavailable)
	if !strings.Contains(err.Error(), "max_value_bytes") {
		t.Fatalf("error %v does not name the limit", err)
	}
}

func TestOriginOutsideAllowlistIsRefused(t *testing.T) {
	h := newHarness(t, 1, false)
	c := h.replicas[0]
	// 127.0.0.0/8 is allowed in the harness; a link-local address is not.
	_, err := c.API.CreateNamespace(tenantCtx("acme"), &cachev1.CreateNamespaceRequest{Namespace: &cachev1.Namespace{
		Name: "meta", OriginUrl: "http://169.254.169.254/{key}",
	}})
	mustCode(t, err, codes.InvalidArgument)
}
