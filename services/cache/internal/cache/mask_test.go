package cache

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
)

// Origin headers hold credentials: no response shows them, and sending the
// mask back in an update keeps the stored value.
func TestNamespaceHeadersAreMasked(t *testing.T) {
	h := newHarness(t, 1, false)
	var mu sync.Mutex
	var auth []string
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Write([]byte("v"))
	})
	c := h.replicas[0]
	const secret = "Bearer s3cret-token"
	shown := func(what string, m proto.Message) {
		t.Helper()
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "s3cret") {
			t.Errorf("%s shows the header value: %s", what, b)
		}
	}
	ns, err := c.API.CreateNamespace(tenantCtx("acme"), &cachev1.CreateNamespaceRequest{Namespace: &cachev1.Namespace{
		Name: "users", Strategy: "read_through", OriginUrl: h.url("/users/{key}"), Headers: map[string]string{"Authorization": secret},
	}})
	if err != nil {
		t.Fatal(err)
	}
	shown("create", ns)
	if ns.GetHeaders()["Authorization"] == "" {
		t.Error("the masked header is not listed at all")
	}
	got, err := c.API.GetNamespace(tenantCtx("acme"), &cachev1.GetNamespaceRequest{Name: "users"})
	if err != nil {
		t.Fatal(err)
	}
	shown("get", got)
	l, err := c.API.ListNamespaces(tenantCtx("acme"), &cachev1.ListNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	shown("list", l)

	// Read-modify-write of what Get answered keeps the secret.
	got.Headers["X-Extra"] = "1"
	up, err := c.API.UpdateNamespace(tenantCtx("acme"), &cachev1.UpdateNamespaceRequest{Namespace: got})
	if err != nil {
		t.Fatal(err)
	}
	shown("update", up)
	if _, err := get(c, "acme", "users", "1"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 1 || auth[0] != secret {
		t.Fatalf("origin got Authorization %q, want the stored secret", auth)
	}
}
