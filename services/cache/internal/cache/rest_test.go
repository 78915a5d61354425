package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

// The REST contract of DESIGN.md, through the gateway and API-key auth.
func TestRESTContract(t *testing.T) {
	h := newHarness(t, 1, false)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "user %s", r.URL.Path) })
	keys, err := auth.ParseKeys("acme:acme-key-1,globex:globex-key-1")
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Name: "cache", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Keys: keys, Log: slog.New(slog.DiscardHandler)})
	h.replicas[0].Register(srv)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + srv.HTTPAddr()

	call := func(method, path, key, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return resp.StatusCode, m
	}
	testenv.WaitFor(t, 10*time.Second, "the gateway", func() bool {
		code, _ := call("GET", "/v1/namespaces", "acme-key-1", "")
		return code == 200
	})

	code, m := call("POST", "/v1/namespaces", "acme-key-1", `{"name":"users","strategy":"read_through","originUrl":"`+h.url("/users/{key}")+`","ttl":"60s"}`)
	if code != 200 || m["name"] != "users" || m["strategy"] != "read_through" || m["ttl"] != "60s" {
		t.Fatalf("create: %d %v", code, m)
	}
	code, m = call("GET", "/v1/namespaces/users/keys/42", "acme-key-1", "")
	if code != 200 || m["value"] != "dXNlciAvdXNlcnMvNDI=" || m["hit"] != false { // base64("user /users/42")
		t.Fatalf("get: %d %v", code, m)
	}
	code, m = call("GET", "/v1/namespaces/users/keys/42", "acme-key-1", "")
	if code != 200 || m["hit"] != true {
		t.Fatalf("second get: %d %v", code, m)
	}
	code, m = call("POST", "/v1/namespaces/users:invalidate", "acme-key-1", `{"keys":["42"]}`)
	if code != 200 || m["invalidated"] != "1" {
		t.Fatalf("invalidate: %d %v", code, m)
	}
	if code, _ = call("GET", "/v1/namespaces/users/keys/42", "globex-key-1", ""); code != 404 {
		t.Fatalf("another tenant's namespace answered %d, want 404", code)
	}
	if code, _ = call("GET", "/v1/namespaces/users/keys/42", "", ""); code != 401 {
		t.Fatalf("no key answered %d, want 401", code)
	}
	if code, m = call("POST", "/v1/namespaces", "acme-key-1", `{"name":"x","strategy":"nope"}`); code != 400 {
		t.Fatalf("bad strategy answered %d %v, want 400", code, m)
	}
	if code, _ = call("PUT", "/v1/namespaces/users/keys/7", "acme-key-1", `{"value":"aGk="}`); code != 200 {
		t.Fatalf("put: %d", code)
	}
	if code, _ = call("DELETE", "/v1/namespaces/users/keys/7", "acme-key-1", ""); code != 200 {
		t.Fatalf("delete key: %d", code)
	}
	if code, m = call("PATCH", "/v1/namespaces/users", "acme-key-1", `{"ttl":"120s"}`); code != 200 || m["ttl"] != "120s" {
		t.Fatalf("patch: %d %v", code, m)
	}
	if code, _ = call("DELETE", "/v1/namespaces/users", "acme-key-1", ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
}
