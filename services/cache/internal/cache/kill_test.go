package cache

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/platform/proctest"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

// TestKillWithWritesPending runs the real binary, queues write-behind
// writes the origin refuses, SIGKILLs the process, lets the origin accept,
// starts a new process and expects every acknowledged write at the origin,
// in order per key: pending writes live in Redis and RabbitMQ, not in the
// process.
func TestKillWithWritesPending(t *testing.T) {
	bin := proctest.Build(t, "../../cmd/cache")
	// The harness provides names, queue cleanup and the origin; the
	// subprocess does the work.
	h := newHarness(t, 0, true)
	var accept atomic.Bool
	var mu sync.Mutex
	got := map[string][]int{}
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			http.NotFound(w, r)
			return
		}
		if !accept.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(r.Body)
		v, _ := strconv.Atoi(b.String())
		mu.Lock()
		key := strings.TrimPrefix(r.URL.Path, "/users/")
		got[key] = append(got[key], v)
		mu.Unlock()
	})
	redisURL := os.Getenv("HOOKYARD_REDIS_URL")
	if redisURL == "" {
		redisURL = "redis://127.0.0.1:6379/0"
	}
	httpAddr, err := loadtest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	run := func() *proctest.Proc {
		p := proctest.Start(t, bin,
			"HOOKYARD_AMQP_URL="+rabbittest.URL(), "HOOKYARD_REDIS_URL="+redisURL,
			"HOOKYARD_HTTP_ADDR="+httpAddr, "HOOKYARD_GRPC_ADDR=127.0.0.1:0",
			"HOOKYARD_API_KEYS=acme:acme-kill-key", "HOOKYARD_ALLOW_CIDRS=127.0.0.0/8",
			"HOOKYARD_LOG_LEVEL=error",
			"HOOKYARD_CACHE_QUEUE_PREFIX="+h.cfg.QueuePrefix,
			"HOOKYARD_CACHE_KEY_PREFIX="+h.cfg.KeyPrefix,
			"HOOKYARD_CACHE_EVENT_BINDINGS=test.cache.none",
			"HOOKYARD_CACHE_WRITE_MAX_BACKOFF=2s",
		)
		p.WaitReady("http://"+httpAddr+"/readyz", 60*time.Second)
		return p
	}
	call := func(method, path, body string) int {
		req, _ := http.NewRequestWithContext(context.Background(), method, "http://"+httpAddr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer acme-kill-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	p := run()
	if code := call("POST", "/v1/namespaces", `{"name":"users","strategy":"write_behind","originUrl":"`+h.url("/users/{key}")+`"}`); code != 200 {
		t.Fatalf("create namespace: %d", code)
	}
	const keys, writes = 5, 4
	acked := map[string]int{}
	for v := 1; v <= writes; v++ {
		for k := range keys {
			key := fmt.Sprint("u", k)
			body := `{"value":"` + base64.StdEncoding.EncodeToString([]byte(strconv.Itoa(v))) + `"}`
			if code := call("PUT", "/v1/namespaces/users/keys/"+key, body); code == 200 {
				acked[key] = v
			}
		}
	}
	if len(acked) != keys {
		t.Fatalf("acknowledged %v", acked)
	}
	p.Kill()
	mu.Lock()
	if len(got) != 0 {
		mu.Unlock()
		t.Fatalf("the origin accepted writes before the kill: %v", got)
	}
	mu.Unlock()

	accept.Store(true)
	run()
	testenv.WaitFor(t, 90*time.Second, "every acknowledged write at the origin", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for key, v := range acked {
			vs := got[key]
			if len(vs) == 0 || vs[len(vs)-1] != v {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for key, vs := range got {
		for i := 1; i < len(vs); i++ {
			if vs[i] < vs[i-1] {
				t.Errorf("key %s: origin got %v, out of order", key, vs)
			}
		}
	}
}
