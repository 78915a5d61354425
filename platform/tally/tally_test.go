package tally

import (
	"context"
	"sync"
	"testing"

	"github.com/hookyard/hookyard/platform/redisconn/redistest"
)

func TestTwoReplicasAddToTheSameTotals(t *testing.T) {
	rdb, prefix := redistest.New(t, "tally")
	ctx := context.Background()
	key := prefix + ":stats:{acme}"
	a, b := New(rdb), New(rdb)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() { a.Add(key, "stripe", "received", 1) })
	}
	wg.Wait()
	a.Add(key, "stripe", "verification_failures", 2)
	b.Add(key, "stripe", "received", 5)
	b.Add(key, "my:ns", "hits", 7)
	for _, tl := range []*Tally{a, b, a} {
		if err := tl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Read(ctx, rdb, key)
	if err != nil {
		t.Fatal(err)
	}
	if got["stripe"]["received"] != 105 || got["stripe"]["verification_failures"] != 2 || got["my:ns"]["hits"] != 7 {
		t.Errorf("counters %v", got)
	}
	if ttl := rdb.TTL(ctx, key).Val(); ttl <= 0 || ttl > TTL {
		t.Errorf("TTL %v, want up to %v", ttl, TTL)
	}
	if other, _ := Read(ctx, rdb, prefix+":stats:{globex}"); len(other) != 0 {
		t.Errorf("another tenant's key has %v", other)
	}
}

func TestCountsSurviveAFailedFlush(t *testing.T) {
	rdb, prefix := redistest.New(t, "tally")
	key := prefix + ":stats:{acme}"
	tl := New(rdb)
	tl.Add(key, "stripe", "received", 3)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tl.Flush(cancelled); err == nil {
		t.Fatal("flush with a cancelled context succeeded")
	}
	if err := tl.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := Read(context.Background(), rdb, key)
	if got["stripe"]["received"] != 3 {
		t.Errorf("counters %v, want the 3 kept across the failed flush", got)
	}
}
