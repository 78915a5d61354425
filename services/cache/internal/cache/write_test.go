package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

func put(c *Cache, tenant, ns, key, value string) (*cachev1.Entry, error) {
	return c.API.PutKey(tenantCtx(tenant), &cachev1.PutKeyRequest{Ns: ns, Key: key, Entry: &cachev1.Entry{Value: []byte(value)}})
}

// recorder is an origin that records writes.
type recorder struct {
	mu     sync.Mutex
	writes []string // "METHOD path body"
}

func (r *recorder) record(req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.writes = append(r.writes, fmt.Sprintf("%s %s %s", req.Method, req.URL.Path, b))
	r.mu.Unlock()
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.writes...)
}

func TestWriteThrough(t *testing.T) {
	h := newHarness(t, 1, false)
	var rec recorder
	var fail atomic.Bool
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			fmt.Fprint(w, "from-origin")
		default:
			if fail.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			rec.record(r)
		}
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "write_through", OriginUrl: h.url("/users/{key}")})

	if _, err := put(c, "acme", "users", "1", "v1"); err != nil {
		t.Fatal(err)
	}
	if got := rec.list(); len(got) != 1 || got[0] != "PUT /users/1 v1" {
		t.Fatalf("origin writes %q", got)
	}
	e, err := get(c, "acme", "users", "1")
	if err != nil || string(e.GetValue()) != "v1" || !e.GetHit() {
		t.Fatalf("after write-through: %v %v", e, err)
	}

	fail.Store(true)
	_, err = put(c, "acme", "users", "1", "v2")
	mustCode(t, err, codes.Unavailable)
	e, err = get(c, "acme", "users", "1")
	if err != nil || string(e.GetValue()) != "v1" {
		t.Fatalf("a failed origin write changed the cache: %v %v", e, err)
	}
}

func TestCacheAside(t *testing.T) {
	h := newHarness(t, 1, false)
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "sessions", Strategy: "cache_aside"})
	_, err := get(c, "acme", "sessions", "s1")
	mustCode(t, err, codes.NotFound)
	if _, err := c.API.PutKey(tenantCtx("acme"), &cachev1.PutKeyRequest{Ns: "sessions", Key: "s1", Entry: &cachev1.Entry{
		Value: []byte("data"), Ttl: durationpb.New(300 * time.Millisecond), Tags: []string{"user:1"},
	}}); err != nil {
		t.Fatal(err)
	}
	e, err := get(c, "acme", "sessions", "s1")
	if err != nil || string(e.GetValue()) != "data" || len(e.GetTags()) != 1 {
		t.Fatalf("got %v %v", e, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the TTL to expire the value", func() bool {
		_, err := get(c, "acme", "sessions", "s1")
		return err != nil
	})
	if _, err := put(c, "acme", "sessions", "s2", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.API.DeleteKey(tenantCtx("acme"), &cachev1.DeleteKeyRequest{Ns: "sessions", Key: "s2"}); err != nil {
		t.Fatal(err)
	}
	_, err = get(c, "acme", "sessions", "s2")
	mustCode(t, err, codes.NotFound)
}

func TestTenantsDoNotSeeEachOther(t *testing.T) {
	h := newHarness(t, 1, false)
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "cache_aside"})
	if _, err := put(c, "acme", "users", "1", "secret"); err != nil {
		t.Fatal(err)
	}
	_, err := get(c, "globex", "users", "1")
	mustCode(t, err, codes.NotFound)
	_, err = c.API.GetNamespace(tenantCtx("globex"), &cachev1.GetNamespaceRequest{Name: "users"})
	mustCode(t, err, codes.NotFound)
	_, err = c.API.DeleteNamespace(tenantCtx("globex"), &cachev1.DeleteNamespaceRequest{Name: "users"})
	mustCode(t, err, codes.NotFound)
	l, err := c.API.ListNamespaces(tenantCtx("globex"), &cachev1.ListNamespacesRequest{})
	if err != nil || len(l.GetNamespaces()) != 0 {
		t.Fatalf("globex lists %v %v", l, err)
	}
	// The same name in another tenant is another namespace.
	createNS(t, c, "globex", &cachev1.Namespace{Name: "users", Strategy: "cache_aside"})
	_, err = get(c, "globex", "users", "1")
	mustCode(t, err, codes.NotFound)
	_, err = c.API.GetKey(context.Background(), &cachev1.GetKeyRequest{Ns: "users", Key: "1"})
	mustCode(t, err, codes.Unauthenticated)
}

func TestDeletedNamespaceStartsEmpty(t *testing.T) {
	h := newHarness(t, 1, false)
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "cache_aside"})
	if _, err := put(c, "acme", "users", "1", "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.API.DeleteNamespace(tenantCtx("acme"), &cachev1.DeleteNamespaceRequest{Name: "users"}); err != nil {
		t.Fatal(err)
	}
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "cache_aside"})
	_, err := get(c, "acme", "users", "1")
	mustCode(t, err, codes.NotFound)
}

func TestUpdateNamespace(t *testing.T) {
	h := newHarness(t, 1, false)
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "cache_aside", Ttl: durationpb.New(time.Minute)})
	ns, err := c.API.UpdateNamespace(tenantCtx("acme"), &cachev1.UpdateNamespaceRequest{Namespace: &cachev1.Namespace{
		Name: "users", Ttl: durationpb.New(time.Hour),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if ns.GetTtl().AsDuration() != time.Hour || ns.GetStrategy() != "cache_aside" {
		t.Fatalf("updated namespace %v", ns)
	}
	_, err = c.API.UpdateNamespace(tenantCtx("acme"), &cachev1.UpdateNamespaceRequest{Namespace: &cachev1.Namespace{
		Name: "users", Strategy: "read_through",
	}})
	mustCode(t, err, codes.InvalidArgument) // read_through needs an origin
}

func TestNamespaceValidation(t *testing.T) {
	h := newHarness(t, 1, false)
	c := h.replicas[0]
	bad := map[string]*cachev1.Namespace{
		"no name":          {Strategy: "cache_aside"},
		"bad name":         {Name: "a b", Strategy: "cache_aside"},
		"bad strategy":     {Name: "x", Strategy: "lazy"},
		"no origin":        {Name: "x", Strategy: "read_through"},
		"no {key}":         {Name: "x", OriginUrl: "http://127.0.0.1:1/users"},
		"not http":         {Name: "x", OriginUrl: "ftp://127.0.0.1/{key}"},
		"jitter above ttl": {Name: "x", Strategy: "cache_aside", Ttl: durationpb.New(time.Second), TtlJitter: durationpb.New(2 * time.Second)},
		"negative ttl":     {Name: "x", Strategy: "cache_aside", Ttl: durationpb.New(-time.Second)},
		"huge values":      {Name: "x", Strategy: "cache_aside", MaxValueBytes: 1 << 30},
		"bad rule pattern": {Name: "x", Strategy: "cache_aside", InvalidationRules: []*cachev1.InvalidationRule{{EventType: "a..b", Keys: []string{"k"}}}},
		"bad template":     {Name: "x", Strategy: "cache_aside", InvalidationRules: []*cachev1.InvalidationRule{{EventType: "a.b", Keys: []string{"k:{data.id"}}}},
		"empty rule":       {Name: "x", Strategy: "cache_aside", InvalidationRules: []*cachev1.InvalidationRule{{EventType: "a.b"}}},
		"bad method":       {Name: "x", Strategy: "write_through", OriginUrl: "http://127.0.0.1:1/{key}", WriteMethod: "DELETE"},
		// A near TTL under 100ns made the LRU's sweeper panic, killing
		// every replica that read from the namespace.
		"huge near bytes": {Name: "x", Strategy: "cache_aside", NearCache: &cachev1.NearCache{MaxEntries: 1, MaxBytes: 1 << 40}},
		"tiny near ttl":   {Name: "x", Strategy: "cache_aside", NearCache: &cachev1.NearCache{MaxEntries: 1, Ttl: durationpb.New(50 * time.Nanosecond)}},
	}
	for name, ns := range bad {
		_, err := c.API.CreateNamespace(tenantCtx("acme"), &cachev1.CreateNamespaceRequest{Namespace: ns})
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		mustCode(t, err, codes.InvalidArgument)
	}
	// The deprecated mode of the first sketch still works.
	ns, err := c.API.CreateNamespace(tenantCtx("acme"), &cachev1.CreateNamespaceRequest{Namespace: &cachev1.Namespace{
		Name: "legacy", Mode: "write_through", OriginUrl: "http://127.0.0.1:1/{key}",
	}})
	if err != nil || ns.GetStrategy() != "write_through" {
		t.Fatalf("legacy mode: %v %v", ns, err)
	}
}

// Write-behind: the cache answers the write at once; a consumer that dies
// before it reached the origin loses nothing: the next one writes.
func TestWriteBehindSurvivesConsumerLoss(t *testing.T) {
	h := newHarness(t, 1, true)
	var rec recorder
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			http.NotFound(w, r)
			return
		}
		rec.record(r)
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "write_behind", OriginUrl: h.url("/users/{key}")})
	if _, err := put(c, "acme", "users", "1", "v1"); err != nil {
		t.Fatal(err)
	}
	e, err := get(c, "acme", "users", "1")
	if err != nil || string(e.GetValue()) != "v1" {
		t.Fatalf("write-behind value not in the cache: %v %v", e, err)
	}
	pend, err := c.API.ListPendingWrites(tenantCtx("acme"), &cachev1.ListPendingWritesRequest{Ns: "users"})
	if err != nil || len(pend.GetWrites()) != 1 || pend.GetWrites()[0].GetKey() != "1" {
		t.Fatalf("backlog %v %v", pend, err)
	}

	// A consumer takes the message and dies without acknowledging it.
	conn, err := amqp.Dial(rabbittest.URL())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(h.cfg.WritesQueue(), "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ds:
	case <-time.After(15 * time.Second):
		t.Fatal("the write-behind message never arrived")
	}
	conn.Close()
	if got := rec.list(); len(got) != 0 {
		t.Fatalf("origin written before any consumer ran: %q", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.RunWrites(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.WaitFor(t, 20*time.Second, "the origin write", func() bool { return len(rec.list()) == 1 })
	if got := rec.list(); got[0] != "PUT /users/1 v1" {
		t.Fatalf("origin got %q", got)
	}
	testenv.WaitFor(t, 10*time.Second, "an empty backlog", func() bool {
		p, err := c.API.ListPendingWrites(tenantCtx("acme"), &cachev1.ListPendingWritesRequest{Ns: "users"})
		return err == nil && len(p.GetWrites()) == 0
	})
}

// Several writes to one key before the origin is reached become one origin
// write of the last value; a failing origin is retried and the failure is
// visible in the backlog meanwhile.
func TestWriteBehindCoalescesAndRetries(t *testing.T) {
	h := newHarness(t, 1, true)
	var rec recorder
	var failures atomic.Int64
	failures.Store(2)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		if failures.Add(-1) >= 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		rec.record(r)
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "write_behind", OriginUrl: h.url("/users/{key}")})
	for _, v := range []string{"v1", "v2", "v3"} {
		if _, err := put(c, "acme", "users", "1", v); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.RunWrites(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	testenv.WaitFor(t, 20*time.Second, "a failed attempt in the backlog", func() bool {
		p, err := c.API.ListPendingWrites(tenantCtx("acme"), &cachev1.ListPendingWritesRequest{Ns: "users"})
		return err == nil && len(p.GetWrites()) == 1 && p.GetWrites()[0].GetAttempts() >= 1 && p.GetWrites()[0].GetLastError() != ""
	})
	testenv.WaitFor(t, 30*time.Second, "the origin write", func() bool { return len(rec.list()) >= 1 })
	// Let the other messages of the key come through and find nothing.
	testenv.WaitFor(t, 20*time.Second, "an empty backlog", func() bool {
		p, err := c.API.ListPendingWrites(tenantCtx("acme"), &cachev1.ListPendingWritesRequest{Ns: "users"})
		return err == nil && len(p.GetWrites()) == 0
	})
	time.Sleep(2 * time.Second)
	if got := rec.list(); len(got) != 1 || got[0] != "PUT /users/1 v3" {
		t.Fatalf("origin writes %q, want one write of v3", got)
	}
}

func TestEventInvalidatesByRule(t *testing.T) {
	h := newHarness(t, 2, true)
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "customers", Strategy: "cache_aside", InvalidationRules: []*cachev1.InvalidationRule{{
		EventType: "stripe.customer.*", Keys: []string{"customer:{data.object.id}"}, Tags: []string{"acct:{data.object.account}"},
	}}})
	createNS(t, c, "acme", &cachev1.Namespace{Name: "reports", Strategy: "cache_aside", InvalidateOn: []string{"stripe.#"}})
	for _, k := range []string{"customer:cus_1", "customer:cus_2"} {
		if _, err := put(c, "acme", "customers", k, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.API.PutKey(tenantCtx("acme"), &cachev1.PutKeyRequest{Ns: "customers", Key: "invoice:9", Entry: &cachev1.Entry{Value: []byte("x"), Tags: []string{"acct:a7"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := put(c, "acme", "reports", "daily", "x"); err != nil {
		t.Fatal(err)
	}
	// Another tenant's namespace of the same name is not touched.
	createNS(t, c, "globex", &cachev1.Namespace{Name: "customers", Strategy: "cache_aside", InvalidationRules: []*cachev1.InvalidationRule{{
		EventType: "#", Keys: []string{"customer:{data.object.id}"},
	}}})
	if _, err := put(c, "globex", "customers", "customer:cus_1", "x"); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range h.replicas {
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.RunEvents(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	pub := rabbit.NewPublisher(h.conn, rabbit.PublisherConfig{})
	t.Cleanup(func() { pub.Close() })
	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: "evt_1", Source: "stripe", Type: "customer.updated", Tenant: "acme", DataContentType: "application/json",
		Data: []byte(`{"id":"evt_1","data":{"object":{"id":"cus_1","account":"a7"}}}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(context.Background(), h.topo.Events, "stripe.customer.updated", msg); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the event's invalidations", func() bool {
		_, e1 := get(c, "acme", "customers", "customer:cus_1")
		_, e2 := get(c, "acme", "customers", "invoice:9")
		_, e3 := get(c, "acme", "reports", "daily")
		return e1 != nil && e2 != nil && e3 != nil
	})
	if _, err := get(c, "acme", "customers", "customer:cus_2"); err != nil {
		t.Fatalf("a key the event does not name was invalidated: %v", err)
	}
	if _, err := get(c, "globex", "customers", "customer:cus_1"); err != nil {
		t.Fatalf("another tenant's key was invalidated: %v", err)
	}
}

type failingPublisher struct{}

func (failingPublisher) Publish(context.Context, string, string, amqp.Publishing) error {
	return errors.New("broker unreachable")
}

// A write whose message never reached the queue (the caller got an error,
// but the cache already shows the value) is found by the sweeper and
// reaches the origin after all.
func TestWriteBehindSweeperRequeuesLostWrites(t *testing.T) {
	h := newHarness(t, 1, true)
	var rec recorder
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) { rec.record(r) })
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "write_behind", OriginUrl: h.url("/users/{key}")})
	pub := c.Writes.Pub
	c.Writes.Pub = failingPublisher{}
	_, err := put(c, "acme", "users", "1", "v1")
	mustCode(t, err, codes.Unavailable)
	c.Writes.Pub = pub

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.RunWrites(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	c.Writes.SweepGrace = 0
	n, err := c.Writes.Sweep(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d pending, %v; want 1", n, err)
	}
	testenv.WaitFor(t, 20*time.Second, "the swept write at the origin", func() bool { return len(rec.list()) == 1 })
	if got := rec.list(); got[0] != "PUT /users/1 v1" {
		t.Fatalf("origin got %q", got)
	}
}

// Until the origin has a write-behind write, a read that misses (the
// cached copy expired or was invalidated) answers the pending write, not
// the origin's older value.
func TestWriteBehindReadsPendingValue(t *testing.T) {
	h := newHarness(t, 1, false)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			fmt.Fprint(w, "old")
		}
	})
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", Strategy: "write_behind", OriginUrl: h.url("/users/{key}")})
	c.Writes.Pub = failingPublisher{} // the write stays pending
	_, err := put(c, "acme", "users", "1", "new")
	mustCode(t, err, codes.Unavailable)
	if _, err := c.API.InvalidateNamespace(tenantCtx("acme"), &cachev1.InvalidateNamespaceRequest{Ns: "users", Keys: []string{"1"}}); err != nil {
		t.Fatal(err)
	}
	e, err := get(c, "acme", "users", "1")
	if err != nil || string(e.GetValue()) != "new" {
		t.Fatalf("read %v %v, want the pending write", e, err)
	}
}
