package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hookyard/hookyard/cmd/console/internal/console"
)

// payload stands for any third-party text: if a page parsed it as HTML,
// an img element would appear (and, without the CSP, run its handler).
const payload = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>"'&amp;`

// TestConsoleEscapesEverything fills every text field of every API answer
// with markup and checks on every page that it shows as text and no
// element was made from it. The services are a stand-in here: what is
// tested is the rendering.
func TestConsoleEscapesEverything(t *testing.T) {
	chromium, node := requireTools(t)
	p := payload
	ts := "2026-01-02T03:04:05Z"
	attempt := map[string]any{"endpointId": p, "number": 1, "time": ts, "statusCode": 500, "latency": "0.25s", "errorClass": p, "error": p, "responseSnippet": p}
	answers := map[string]any{
		"/v1/messages/" + p:               map[string]any{"id": p, "source": p, "type": p, "createTime": ts, "data": map[string]any{p: p}, "deliveries": []any{map[string]any{"endpointId": p, "status": p, "attempts": 1}}},
		"/v1/messages/" + p + "/attempts": map[string]any{"attempts": []any{attempt}},
		"/v1/messages":                    map[string]any{"messages": []any{map[string]any{"id": p, "source": p, "type": p, "createTime": ts, "deliveries": []any{map[string]any{"endpointId": p, "status": p, "attempts": 1, "lastAttempt": attempt}}}}},
		"/v1/sourceStats":                 map[string]any{"stats": []any{map[string]any{"source": p, "receivedCount": "2", "verificationFailureCount": "1"}}},
		"/v1/namespaceStats":              map[string]any{"stats": []any{map[string]any{"namespace": p, "hitCount": "3", "missCount": "1", "hitRatio": 0.75}}},
		"/v1/deadLetters":                 map[string]any{"deadLetters": []any{map[string]any{"messageId": p, "endpointId": p, "time": ts, "reason": p, "lastAttempt": attempt}}},
		"/v1/endpoints": map[string]any{"endpoints": []any{map[string]any{"id": p, "url": p, "description": p, "eventTypes": []string{p}, "disabled": true, "disabledReason": p, "failingSince": ts, "timeout": p, "rateLimit": 5,
			"health": map[string]any{"breakerState": p, "breakerUntil": ts, "breakerReplicas": 2, "failureCount": 3, "inFlight": 1, "rateTokens": 1.5, "heldCount": "2"}}}},
		"/v1/deliveryQueues": map[string]any{"queues": []any{map[string]any{"name": p, "kind": p, "delay": p, "ready": "3", "consumers": 1}, map[string]any{"name": p, "kind": p, "missing": true}}},
		"/v1/sources":        map[string]any{"sources": []any{map[string]any{"name": p, "provider": p, "secrets": []string{p}, "tolerance": p, "publicUrl": p}}},
		"/v1/tasks":          map[string]any{"tasks": []any{map[string]any{"id": p, "name": p, "queue": p, "state": "failed", "attempts": 1, "error": p, "createTime": ts}}},
		"/v1/tasks/" + p:     map[string]any{"id": p, "name": p, "queue": p, "state": "failed", "error": p, "args": map[string]any{p: p}, "result": p, "callbackUrl": p, "callbackState": p, "attemptLog": []any{map[string]any{"number": 1, "outcome": p, "worker": p, "error": p}}},
		"/v1/queues":         map[string]any{"queues": []any{map[string]any{"name": p, "ready": "3", "running": "1"}}},
		"/v1/namespaces":     map[string]any{"namespaces": []any{map[string]any{"name": p, "strategy": p, "originUrl": p, "ttl": p, "createTime": ts}}},
	}
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		a, ok := answers[r.URL.Path]
		if !ok {
			a = map[string]any{}
		}
		json.NewEncoder(w).Encode(a)
	}))
	defer fake.Close()
	upstreams := map[string]*string{}
	for _, s := range console.Services {
		upstreams[s.Name] = &fake.URL
	}
	h, err := console.New(console.Config{Upstreams: upstreams}, nil)
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(h)
	defer web.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "escape.mjs")
	cmd.Env = append(os.Environ(), "CONSOLE_URL="+web.URL, "CHROMIUM_PATH="+chromium, "PAYLOAD="+payload)
	out, err := cmd.CombinedOutput()
	t.Logf("browser:\n%s", out)
	if err != nil {
		t.Fatalf("browser test: %v", err)
	}
	if !strings.Contains(string(out), "pages checked: 9") {
		t.Fatal("the browser did not check every page")
	}
}
