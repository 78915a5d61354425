package dedupe

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func testStore(t testing.TB) (*Store, redis.UniversalClient) {
	t.Helper()
	u := os.Getenv("HOOKYARD_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	prefix := fmt.Sprintf("test:dedupe:%d", time.Now().UnixNano())
	t.Cleanup(func() {
		keys, _ := rdb.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	return New(rdb, prefix), rdb
}

func TestClaimConfirmDuplicate(t *testing.T) {
	s, rdb := testStore(t)
	ctx := context.Background()
	k := s.Key("acme", "stripe", "evt_1")
	st, c, err := s.Claim(ctx, k)
	if err != nil || st != Claimed {
		t.Fatalf("first claim: %v %v", st, err)
	}
	if st, _, _ := s.Claim(ctx, k); st != InProgress {
		t.Fatalf("claim while publishing = %v, want InProgress", st)
	}
	if err := s.Confirm(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := s.Claim(ctx, k); st != Done {
		t.Fatalf("claim after confirm = %v, want Done", st)
	}
	ttl := rdb.TTL(ctx, k).Val()
	if ttl < 59*time.Minute || ttl > time.Hour {
		t.Fatalf("ttl = %v, want ~1h", ttl)
	}
}

func TestReleaseAllowsRetry(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	k := s.Key("acme", "stripe", "evt_2")
	_, c, _ := s.Claim(ctx, k)
	if err := s.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := s.Claim(ctx, k); st != Claimed {
		t.Fatalf("claim after release = %v, want Claimed", st)
	}
}

// A publisher whose claim expired must not release the next owner's claim.
func TestStaleReleaseKeepsNewClaim(t *testing.T) {
	s, _ := testStore(t)
	s.ClaimTTL = 50 * time.Millisecond
	ctx := context.Background()
	k := s.Key("acme", "x", "evt_3")
	_, old, _ := s.Claim(ctx, k)
	time.Sleep(120 * time.Millisecond)
	st, _, _ := s.Claim(ctx, k)
	if st != Claimed {
		t.Fatalf("claim after expiry = %v", st)
	}
	if err := s.Release(ctx, old); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := s.Claim(ctx, k); st != InProgress {
		t.Fatalf("stale release removed the new claim: %v", st)
	}
}

func TestKeyNoCollision(t *testing.T) {
	s := New(nil, "p")
	if s.Key("a:b", "c") == s.Key("a", "b:c") {
		t.Fatal("keys collide")
	}
}

// Of many concurrent claims on one id exactly one wins.
func TestConcurrentClaims(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	k := s.Key("acme", "github", "d-1")
	var mu sync.Mutex
	won := 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _, err := s.Claim(ctx, k)
			if err != nil {
				t.Error(err)
			}
			if st == Claimed {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d claims won, want 1", won)
	}
}

func TestBind(t *testing.T) {
	s, rdb := testStore(t)
	ctx := context.Background()
	key := s.Key("acme", "mailgun", "nonce", "tok")
	for _, c := range []struct {
		value string
		want  bool
	}{{"evt-1", true}, {"evt-1", true}, {"evt-2", false}} {
		if ok, err := s.Bind(ctx, key, c.value, time.Minute); err != nil || ok != c.want {
			t.Fatalf("Bind(%s) = %v, %v; want %v", c.value, ok, err, c.want)
		}
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL %v, want at most a minute", ttl)
	}
}

func TestDoRunsOncePerKey(t *testing.T) {
	s, rdb := testStore(t)
	ctx := context.Background()
	k := s.Key("acme", "app", "id-1")

	// A failed run gives the key back, so the retry runs again.
	boom := fmt.Errorf("broker down")
	if st, err := s.Do(ctx, k, time.Hour, func(context.Context) error { return boom }); st != Claimed || err != boom {
		t.Fatalf("failed run: %v %v", st, err)
	}
	runs := 0
	if st, err := s.Do(ctx, k, time.Hour, func(context.Context) error { runs++; return nil }); st != Claimed || err != nil || runs != 1 {
		t.Fatalf("retry: %v %v runs=%d", st, err, runs)
	}
	if st, err := s.Do(ctx, k, time.Hour, func(context.Context) error { runs++; return nil }); st != Done || err != nil || runs != 1 {
		t.Fatalf("repeat: %v %v runs=%d", st, err, runs)
	}
	if ttl := rdb.TTL(ctx, k).Val(); ttl < 59*time.Minute || ttl > time.Hour {
		t.Fatalf("ttl = %v, want ~1h", ttl)
	}

	// While one run holds the claim, another is told to retry.
	k2 := s.Key("acme", "app", "id-2")
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Do(ctx, k2, time.Hour, func(context.Context) error { close(inside); <-release; return nil })
		done <- err
	}()
	<-inside
	if st, err := s.Do(ctx, k2, time.Hour, func(context.Context) error { t.Error("ran twice"); return nil }); st != InProgress || err != ErrInProgress {
		t.Fatalf("concurrent run: %v %v", st, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A run whose claim expired and was taken over does not overwrite or
// release the new owner's claim (the fencing token).
func TestDoStaleRunKeepsFence(t *testing.T) {
	s, rdb := testStore(t)
	s.ClaimTTL = 200 * time.Millisecond
	ctx := context.Background()
	k := s.Key("acme", "app", "slow")
	_, err := s.Do(ctx, k, time.Hour, func(context.Context) error {
		time.Sleep(400 * time.Millisecond)
		// The claim expired; a second caller takes over.
		st, _, err := s.Claim(ctx, k)
		if err != nil || st != Claimed {
			t.Errorf("takeover claim: %v %v", st, err)
		}
		return fmt.Errorf("slow publish failed")
	})
	if err == nil {
		t.Fatal("want the run's error")
	}
	v := rdb.Get(ctx, k).Val()
	if v == "" || v == "done" {
		t.Fatalf("stale release touched the new claim: %q", v)
	}
}
