package source

import (
	"context"
	"fmt"
	"testing"
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
)

// A lookup serves every request waiting on it, so the first caller going
// away (a provider closing its connection) must not fail the others.
func TestLookupOutlivesItsFirstCaller(t *testing.T) {
	rdb, prefix := testRedis(t)
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

// The verifier is compiled when the source is loaded, not per request:
// lookups served from the cache share it, and a change compiles anew.
func TestLookupCompilesTheVerifierOnce(t *testing.T) {
	rdb, prefix := testRedis(t)
	s := New(rdb, prefix)
	s.CacheTTL = time.Hour
	ctx := context.Background()
	if _, err := s.Create(ctx, "acme", stripeSource); err != nil {
		t.Fatal(err)
	}
	first, err := s.Lookup(ctx, stripeSource.GetName())
	if err != nil || first.Verifier == nil {
		t.Fatalf("lookup: %+v, %v; want a compiled verifier", first, err)
	}
	again, err := s.Lookup(ctx, stripeSource.GetName())
	if err != nil || again.Verifier != first.Verifier {
		t.Fatalf("second lookup compiled again (%p, then %p), err %v", first.Verifier, again.Verifier, err)
	}
	if _, err := s.Modify(ctx, "acme", stripeSource.GetName(), func(cur *ingressv1.Source) (*ingressv1.Source, error) {
		cur.Secrets = []string{"whsec_rotated_secret_000001"}
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	changed, err := s.Lookup(ctx, stripeSource.GetName())
	if err != nil || changed.Verifier == nil || changed.Verifier == first.Verifier {
		t.Fatalf("after a change: %+v, %v; want a new verifier", changed, err)
	}
}
