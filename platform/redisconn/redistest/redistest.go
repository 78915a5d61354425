// Package redistest gives tests the real Redis, each test under a key
// prefix of its own that is cleaned up when the test ends.
package redistest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisconn"
)

// URL is the Redis the tests use: HOOKYARD_REDIS_URL, or the local one.
func URL() string {
	if u := os.Getenv("HOOKYARD_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// Prefix returns a key prefix no other test run uses, naming kind.
func Prefix(kind string) string {
	return fmt.Sprintf("test:%s:%x%04x", kind, time.Now().UnixNano(), rand.N(1<<16))
}

// Open connects to the test Redis; when the test ends, every key under
// prefix (and nothing else) is deleted and the client closed.
func Open(t testing.TB, prefix string) redis.UniversalClient {
	t.Helper()
	if prefix == "" {
		t.Fatal("redistest: an empty prefix would delete every key")
	}
	rdb, err := redisconn.Open(URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		rdb.Close()
		t.Fatalf("redis: %v", err)
	}
	t.Cleanup(func() {
		DeleteKeys(rdb, prefix)
		rdb.Close()
	})
	return rdb
}

// New is Open under a fresh Prefix(kind), which it returns.
func New(t testing.TB, kind string) (redis.UniversalClient, string) {
	t.Helper()
	prefix := Prefix(kind)
	return Open(t, prefix), prefix
}

// DeleteKeys deletes every key starting with prefix; an empty prefix
// deletes nothing.
func DeleteKeys(rdb redis.UniversalClient, prefix string) {
	if prefix == "" {
		return
	}
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		rdb.Del(ctx, keys[:n]...)
		keys = keys[n:]
	}
}
