package dispatcher

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hookyard/hookyard/platform/ssrf"
)

// A burst of attempts to one subscriber host (a fan-out of 10 to endpoints
// on one host, 64 events at once, is up to 640 requests in flight) reuses
// the connections of the burst before it: once warm, nothing is dialled
// again. A pool that keeps fewer idle connections than the burst needs
// closes the surplus after each burst and redials it for the next one.
func TestDeliveryClientKeepsConnectionsForABurst(t *testing.T) {
	const burst = 512
	var dials atomic.Int64
	var arrived sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every request of the burst is in flight at once, each on its
		// own connection.
		arrived.Done()
		arrived.Wait()
		w.WriteHeader(http.StatusOK) // no body: the connection is idle again before Do returns
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	allow, err := ssrf.ParseCIDRs(loopback)
	if err != nil {
		t.Fatal(err)
	}
	client := deliveryClient(ssrf.Policy{Allow: allow}, testConfig(newID()))
	t.Cleanup(client.CloseIdleConnections)

	round := func() int64 {
		before := dials.Load()
		arrived.Add(burst)
		var wg sync.WaitGroup
		for range burst {
			wg.Go(func() {
				req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, http.NoBody)
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_ = resp.Body.Close()
			})
		}
		wg.Wait()
		return dials.Load() - before
	}
	if n := round(); n != burst {
		t.Fatalf("warm-up burst dialled %d connections, want %d", n, burst)
	}
	for i := range 3 {
		if n := round(); n != 0 {
			t.Fatalf("burst %d after warm-up dialled %d new connections, want 0", i+1, n)
		}
	}
}
