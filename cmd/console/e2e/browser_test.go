// Package e2e tests the web console in headless Chromium against the real
// services: the four binaries on the real RabbitMQ and Redis, the console in
// front of them, and console.mjs driving the browser with playwright-core.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hookyard/hookyard/cmd/console/internal/console"
	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/platform/redisconn"
)

// xss is what the subscriber answers: if the console rendered response
// snippets as HTML, the browser would run it.
const xss = `<img src=x onerror="window.__xss=1;document.title='pwned'"><script>window.__xss=2</script>ok`

// waitTimeout is generous: CI machines are slow and shared.
const waitTimeout = 90 * time.Second

func TestConsoleInBrowser(t *testing.T) {
	chromium, node := requireTools(t)
	id := newID(t)
	tenant, key := "console-"+id, "key-"+id
	amqpURL := vhostURL(t, "hookyard-test-console-"+id)
	redisURL := envOr("HOOKYARD_REDIS_URL", "redis://127.0.0.1:6379/0")
	prefix := "hookyard:test:console:" + id
	cleanRedis(t, redisURL, prefix)

	// The subscriber: /ok answers the XSS payload with 200; /flaky refuses
	// each message's first delivery with 400 (a permanent failure, so a
	// dead letter) and accepts it afterwards.
	var mu sync.Mutex
	flakySeen := map[string]int{}
	sub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, xss)
		case "/flaky":
			mu.Lock()
			flakySeen[r.Header.Get("webhook-id")]++
			n := flakySeen[r.Header.Get("webhook-id")]
			mu.Unlock()
			if n == 1 {
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, "<b>not yet</b>")
				return
			}
			io.WriteString(w, "recovered")
		default:
			http.Error(w, "boom", http.StatusInternalServerError)
		}
	}))
	defer sub.Close()

	bin := buildServices(t)
	common := []string{
		"HOOKYARD_AMQP_URL=" + amqpURL,
		"HOOKYARD_REDIS_URL=" + redisURL,
		"HOOKYARD_API_KEYS=" + tenant + ":" + key,
		"HOOKYARD_ALLOW_CIDRS=127.0.0.0/8",
		"HOOKYARD_LOG_LEVEL=warn",
		"HOOKYARD_SHUTDOWN_TIMEOUT=5s",
		"HOOKYARD_SOURCES_KEY_PREFIX=" + prefix + ":ingress",
		"HOOKYARD_EVENT_IDS_KEY_PREFIX=" + prefix + ":ingress:dedupe",
	}
	own := map[string][]string{
		"ingress":    nil,
		"dispatcher": {"HOOKYARD_DISPATCHER_KEY_PREFIX=" + prefix + ":dispatcher", "HOOKYARD_DISPATCHER_QUEUE_PREFIX=test.console." + id + ".dispatcher", "HOOKYARD_DISPATCHER_SHUTDOWN_GRACE=5s"},
		"cache":      {"HOOKYARD_CACHE_KEY_PREFIX=" + prefix + ":cache", "HOOKYARD_CACHE_QUEUE_PREFIX=test.console." + id + ".cache"},
		"jobs":       {"HOOKYARD_JOBS_KEY_PREFIX=" + prefix + ":jobs", "HOOKYARD_JOBS_QUEUE_PREFIX=test.console." + id + ".jobs"},
	}
	upstreams := map[string]*string{}
	for _, s := range console.Services {
		addr := start(t, filepath.Join(bin, s.Name), append(common, own[s.Name]...))
		u := "http://" + addr
		upstreams[s.Name] = &u
	}
	for name, u := range upstreams {
		waitReady(t, name, *u)
	}

	h, err := console.New(console.Config{Upstreams: upstreams}, nil)
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(h)
	defer web.Close()
	c := &client{t: t, base: web.URL, key: key}

	// Seed what the browser will look at, through the console's proxy.
	c.do("POST", "/api/dispatcher/v1/endpoints", map[string]any{"url": sub.URL + "/ok", "eventTypes": []string{"app.order.#"}, "rateLimit": 50}, nil)
	var flaky struct{ ID string }
	c.do("POST", "/api/dispatcher/v1/endpoints", map[string]any{"url": sub.URL + "/flaky", "eventTypes": []string{"app.invoice.#"}, "description": "fails once"}, &flaky)
	var dead struct{ ID string }
	c.do("POST", "/api/dispatcher/v1/messages", map[string]any{"type": "invoice.failed", "data": map[string]any{"n": 1}}, &dead)
	poll(t, "the dead letter", func() bool {
		var r struct{ DeadLetters []struct{ MessageID string } }
		c.do("GET", "/api/dispatcher/v1/deadLetters", nil, &r)
		return len(r.DeadLetters) == 1 && r.DeadLetters[0].MessageID == dead.ID
	})
	var pending, failed struct{ ID string }
	c.do("POST", "/api/jobs/v1/tasks", map[string]any{"name": "report.build", "queue": "reports", "args": map[string]any{"month": "2026-11"}}, &pending)
	c.do("POST", "/api/jobs/v1/tasks", map[string]any{"name": "http", "queue": "hooks", "maxRetries": -1, "args": map[string]any{"url": sub.URL + "/fail"}}, &failed)
	poll(t, "the http task to fail", func() bool {
		var tk struct{ State string }
		c.do("GET", "/api/jobs/v1/tasks/"+failed.ID, nil, &tk)
		return tk.State == "failed"
	})
	c.do("POST", "/api/cache/v1/namespaces", map[string]any{"name": "catalog", "strategy": "cache_aside", "ttl": "60s"}, nil)
	// Two reads of a key put there: hits the cache page shows.
	c.do("PUT", "/api/cache/v1/namespaces/catalog/keys/sku-1", map[string]any{"value": "c2t1"}, nil)
	c.do("GET", "/api/cache/v1/namespaces/catalog/keys/sku-1", nil, nil)
	c.do("GET", "/api/cache/v1/namespaces/catalog/keys/sku-1", nil, nil)
	// A Stripe source and a webhook with a wrong signature: a verification
	// failure the sources page shows.
	source := "shop-" + id
	c.do("POST", "/api/ingress/v1/sources", map[string]any{"name": source, "provider": "stripe", "secrets": []string{"whsec_console_" + id}}, nil)
	hook, err := http.NewRequest("POST", *upstreams["ingress"]+"/webhooks/"+source, strings.NewReader(`{"id":"evt_1","type":"charge.succeeded"}`))
	if err != nil {
		t.Fatal(err)
	}
	hook.Header.Set("Stripe-Signature", fmt.Sprintf("t=%d,v1=%064x", time.Now().Unix(), 0))
	if res, err := http.DefaultClient.Do(hook); err != nil {
		t.Fatal(err)
	} else if res.Body.Close(); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("badly signed webhook: %d, want 401", res.StatusCode)
	}

	shots := os.Getenv("CONSOLE_SCREENSHOT_DIR")
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "hookyard-console-screenshots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "console.mjs")
	cmd.Env = append(os.Environ(),
		"CONSOLE_URL="+web.URL, "API_KEY="+key, "CHROMIUM_PATH="+chromium, "SCREENSHOT_DIR="+shots,
		"DEAD_MESSAGE_ID="+dead.ID, "FLAKY_ENDPOINT_ID="+flaky.ID, "SOURCE_NAME="+source, "PENDING_TASK_ID="+pending.ID, "FAILED_TASK_ID="+failed.ID)
	out, err := cmd.CombinedOutput()
	t.Logf("browser:\n%s", out)
	if err != nil {
		t.Fatalf("browser test: %v", err)
	}
	t.Logf("screenshots in %s", shots)

	// What the browser did happened on the services.
	var tk struct{ State string }
	c.do("GET", "/api/jobs/v1/tasks/"+pending.ID, nil, &tk)
	if tk.State != "cancelled" {
		t.Errorf("task %s is %s after Cancel, want cancelled", pending.ID, tk.State)
	}
	var m struct {
		Deliveries []struct{ EndpointID, Status string }
	}
	c.do("GET", "/api/dispatcher/v1/messages/"+dead.ID, nil, &m)
	if len(m.Deliveries) != 1 || m.Deliveries[0].Status != "delivered" {
		t.Errorf("dead-lettered message after Resend: %+v, want delivered", m.Deliveries)
	}
	mu.Lock()
	if n := flakySeen[dead.ID]; n != 2 {
		t.Errorf("the flaky endpoint got message %s %d times, want 2", dead.ID, n)
	}
	mu.Unlock()
}

// requireTools finds chromium, node and playwright-core. In CI a missing
// one fails the test; elsewhere it skips with what to install.
func requireTools(t *testing.T) (chromium, node string) {
	t.Helper()
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("browser test skipped in -short mode")
	}
	var missing []string
	chromium = os.Getenv("CHROMIUM_PATH")
	if chromium == "" {
		for _, name := range []string{"chromium", "chromium-browser"} {
			if p, err := exec.LookPath(name); err == nil {
				chromium = p
				break
			}
		}
	}
	if fi, err := os.Stat(chromium); chromium == "" || err != nil || fi.IsDir() {
		missing = append(missing, "chromium (apt-get install chromium, or set CHROMIUM_PATH)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (apt-get install nodejs npm)")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "playwright-core (cd cmd/console/e2e && npm ci)")
	}
	if len(missing) > 0 {
		msg := "the console browser test needs " + strings.Join(missing, ", ") + "; deploy/local/deps.sh installs them"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return chromium, node
}

func newID(t *testing.T) string {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// vhostURL gives the test a RabbitMQ virtual host of its own, deleted with
// everything in it when the test ends, so the services' queues never meet
// another test's. It needs rabbitmqctl (root or the rabbitmq user).
func vhostURL(t *testing.T, vhost string) string {
	t.Helper()
	base := envOr("HOOKYARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	user := u.User.Username()
	ctl := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rabbitmqctl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := ctl("add_vhost", vhost); err != nil {
		msg := fmt.Sprintf("the console browser test makes a RabbitMQ virtual host of its own with rabbitmqctl (as root or rabbitmq): %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if err := ctl("delete_vhost", vhost); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*"); err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + vhost
	u.RawPath = "/" + url.PathEscape(vhost)
	return u.String()
}

// cleanRedis deletes the test's keys when it ends (and nothing else).
func cleanRedis(t *testing.T, redisURL, prefix string) {
	t.Helper()
	rdb, err := redisconn.Open(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer rdb.Close()
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			rdb.Del(ctx, keys[:n]...)
			keys = keys[n:]
		}
	})
}

// buildServices builds the four service binaries into a temporary
// directory (the go tool caches the work between runs).
func buildServices(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, s := range console.Services {
		args = append(args, "github.com/hookyard/hookyard/services/"+s.Name+"/cmd/"+s.Name)
	}
	// One go build compiles the four in parallel.
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

// start runs a service binary on free loopback ports and returns its HTTP
// address; it is stopped with SIGTERM when the test ends, and its log shown
// if the test failed.
func start(t *testing.T, path string, env []string) string {
	t.Helper()
	httpAddr, grpcAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(path)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HOOKYARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, "HOOKYARD_HTTP_ADDR="+httpAddr, "HOOKYARD_GRPC_ADDR="+grpcAddr)
	var log bytes.Buffer
	var logMu sync.Mutex
	cmd.Stdout = &lockedWriter{w: &log, mu: &logMu}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(path)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			logMu.Lock()
			t.Logf("%s log:\n%s", name, log.String())
			logMu.Unlock()
		}
	})
	return httpAddr
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := loadtest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func waitReady(t *testing.T, name, base string) {
	t.Helper()
	poll(t, name+" /readyz", func() bool {
		res, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// client calls the services through the console, as the browser does.
type client struct {
	t         *testing.T
	base, key string
}

func (c *client) do(method, path string, body, out any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		c.t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}
