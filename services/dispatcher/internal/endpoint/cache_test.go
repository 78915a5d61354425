package endpoint

import (
	"context"
	"fmt"
	"testing"

	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// A full cache drops the tenants used least recently, not every tenant at
// once (which would send all of them to Redis together).
func TestCacheKeepsBusyTenantsWhenFull(t *testing.T) {
	prefix := testenv.KeyPrefix(testenv.ID())
	s := New(testenv.Redis(t, prefix), prefix)
	ctx := context.Background()
	read := func(tenant string) {
		t.Helper()
		if _, err := s.all(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	read("busy")
	for i := range cacheSize + 10 {
		read(fmt.Sprintf("t%d", i))
		if i%1000 == 0 {
			read("busy")
		}
	}
	if !s.cache.Contains("busy") {
		t.Fatal("the busy tenant was dropped from a full cache")
	}
	if s.cache.Len() > cacheSize {
		t.Fatalf("cache holds %d tenants, more than %d", s.cache.Len(), cacheSize)
	}
}
