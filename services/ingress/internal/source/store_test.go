package source

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/redisconn"
)

// A lookup serves every request waiting on it, so the first caller going
// away (a provider closing its connection) must not fail the others.
func TestLookupOutlivesItsFirstCaller(t *testing.T) {
	u := os.Getenv("HOOKYARD_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	rdb, err := redisconn.Open(u)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	prefix := fmt.Sprintf("test:source:%d", time.Now().UnixNano())
	defer func() {
		keys, _ := rdb.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	}()
	s := New(rdb, prefix)
	name := fmt.Sprintf("lk%d", time.Now().UnixNano()%1e9)
	if _, err := s.Create(context.Background(), "acme", &ingressv1.Source{Name: name, Provider: "stripe", Secrets: []string{"whsec_abcdefghijklmnop1234"}}); err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	rec, err := s.Lookup(gone, name)
	if err != nil || rec.Tenant != "acme" {
		t.Fatalf("lookup for a caller that left: %v, %v; want the source", rec, err)
	}
}
