package cache

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
	"github.com/hookyard/hookyard/services/cache/internal/writebehind"
)

// harness runs replicas of the cache against the real Redis (and, with
// broker set, RabbitMQ) under names of the test's own, in front of an
// origin whose handler the test sets.
type harness struct {
	t        *testing.T
	cfg      Config
	replicas []*Cache
	conn     *rabbit.Conn
	topo     rabbit.Topology

	mu      sync.Mutex
	handler http.HandlerFunc
	origin  *httptest.Server
}

func newHarness(t *testing.T, replicas int, broker bool) *harness {
	t.Helper()
	id := testenv.ID()
	h := &harness{t: t}
	prefix := "hookyard:test:cache:" + id
	rdb := testenv.Redis(t, prefix)
	h.topo = rabbit.Topology{Events: "test-cache-" + id + ".events", Unrouted: "test-cache-" + id + ".unrouted"}
	h.cfg = Config{QueuePrefix: "test-cache-" + id, KeyPrefix: prefix, EventBindings: "#", Exchange: h.topo.Events, EventConcurrency: 4, WriteConcurrency: 4}
	if broker {
		queues := []string{h.cfg.EventsQueue(), rabbit.DLQName(h.cfg.EventsQueue()), h.cfg.WritesQueue(), rabbit.DLQName(h.cfg.WritesQueue()), h.topo.Unrouted}
		ladder := writebehind.New(h.cfg.WritesQueue()).Ladder
		queues = append(queues, ladder.Queues()...)
		testenv.Cleanup(t, queues, []string{h.topo.Events, h.topo.Unrouted, ladder.Exchange()})
		h.conn = testenv.Rabbit(t, h.topo.Declare, h.cfg.Declare)
	}
	h.origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		fn := h.handler
		h.mu.Unlock()
		if fn == nil {
			http.Error(w, "no handler", http.StatusInternalServerError)
			return
		}
		fn(w, r)
	}))
	t.Cleanup(h.origin.Close)
	for range replicas {
		c, err := New(h.cfg, Deps{Rabbit: h.conn, Redis: rdb, AllowCIDRs: "127.0.0.0/8"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Near.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		h.replicas = append(h.replicas, c)
	}
	return h
}

func (h *harness) setOrigin(fn http.HandlerFunc) {
	h.mu.Lock()
	h.handler = fn
	h.mu.Unlock()
}

// url is the origin URL template for path (e.g. "/users/{key}").
func (h *harness) url(path string) string { return h.origin.URL + path }

// ctx is a request context of tenant.
func tenantCtx(tenant string) context.Context {
	return auth.WithTenant(context.Background(), tenant)
}
