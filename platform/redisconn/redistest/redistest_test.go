package redistest

import (
	"context"
	"testing"
)

// Keys under a test's prefix are gone when it ends, and no others.
func TestNewCleansUpItsPrefixOnly(t *testing.T) {
	ctx := context.Background()
	outside, other := New(t, "outside")
	if err := outside.Set(ctx, other+":k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var prefix string
	t.Run("inner", func(t *testing.T) {
		rdb, p := New(t, "inner")
		prefix = p
		for _, k := range []string{p + ":a", p + ":b"} {
			if err := rdb.Set(ctx, k, "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	})
	if n, err := outside.Exists(ctx, prefix+":a", prefix+":b").Result(); err != nil || n != 0 {
		t.Fatalf("keys left under the test's prefix: %d, %v", n, err)
	}
	if n, err := outside.Exists(ctx, other+":k").Result(); err != nil || n != 1 {
		t.Fatalf("another prefix's key: %d, %v; want kept", n, err)
	}
}
