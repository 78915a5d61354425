package dedupe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Do's bindings go in the claim's round trip: fn runs after one round trip
// to Redis, not one per binding plus the claim.
func TestDoBindsInTheClaimRoundTrip(t *testing.T) {
	base, _ := testStore(t)
	s, _, rt := proxiedStore(t, base)
	ctx := context.Background()
	if _, _, err := s.Claim(ctx, s.Key("warm")); err != nil {
		t.Fatal(err)
	}
	start := rt.N()
	var before int64
	st, err := s.Do(ctx, s.Key("evt", "1"), time.Hour, func(context.Context) error {
		before = rt.N() - start
		return nil
	}, Binding{Key: s.Key("nonce", "n1"), Value: "1", TTL: time.Minute})
	if err != nil || st != Claimed {
		t.Fatalf("Do: %v %v", st, err)
	}
	if before != 1 {
		t.Fatalf("fn ran after %d round trips, want 1 (claim and binding together)", before)
	}
}

// A refused binding fails Do with ErrBound, fn does not run, and the claim
// taken in the same round trip is given back.
func TestDoRefusedBindingReleasesTheClaim(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	nonce := s.Key("nonce", "n1")
	if ok, err := s.Bind(ctx, nonce, "evt_a", time.Minute); err != nil || !ok {
		t.Fatalf("bind: %v %v", ok, err)
	}
	ran := false
	k := s.Key("evt_b")
	_, err := s.Do(ctx, k, time.Hour, func(context.Context) error { ran = true; return nil },
		Binding{Key: nonce, Value: "evt_b", TTL: time.Minute})
	if !errors.Is(err, ErrBound) {
		t.Fatalf("Do with a nonce bound to another id: %v, want ErrBound", err)
	}
	if ran {
		t.Fatal("fn ran although the binding was refused")
	}
	// The release is queued before this claim, so the claim sees it.
	if st, _, err := s.Claim(ctx, k); err != nil || st != Claimed {
		t.Fatalf("claim after the refused Do: %v %v, want Claimed (released)", st, err)
	}
}

// DoChecked reads its checks in the claim's round trip; Allow sees the
// value or its absence, a refusal wins over what the claim found (even a
// Done), fn does not run and a claim made is given back.
func TestDoCheckedReadsInTheClaimRoundTrip(t *testing.T) {
	base, rdb := testStore(t)
	s, _, rt := proxiedStore(t, base)
	ctx := context.Background()
	owner := s.Key("owner")
	if err := rdb.Set(ctx, owner, "acme", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Claim(ctx, s.Key("warm")); err != nil {
		t.Fatal(err)
	}
	refused := errors.New("not yours")
	allowOwner := func(tenant string) Check {
		return Check{Key: owner, Allow: func(v string, found bool) error {
			if !found || v != tenant {
				return refused
			}
			return nil
		}}
	}
	start := rt.N()
	var before int64
	k := s.Key("evt", "1")
	st, err := s.DoChecked(ctx, k, time.Hour, []Check{allowOwner("acme")}, func(context.Context) error {
		before = rt.N() - start
		return nil
	})
	if err != nil || st != Claimed || before != 1 {
		t.Fatalf("DoChecked: %v %v after %d round trips, want Claimed after 1", st, err, before)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Refused, although the id is done: the check's answer comes first.
	ran := false
	if _, err := s.DoChecked(ctx, k, time.Hour, []Check{allowOwner("globex")}, func(context.Context) error { ran = true; return nil }); !errors.Is(err, refused) || ran {
		t.Fatalf("refused check on a done id: %v (fn ran: %v), want the refusal", err, ran)
	}
	// A refusal gives back the claim it made.
	k2 := s.Key("evt", "2")
	if _, err := s.DoChecked(ctx, k2, time.Hour, []Check{allowOwner("globex")}, func(context.Context) error { ran = true; return nil }); !errors.Is(err, refused) || ran {
		t.Fatalf("refused check: %v (fn ran: %v)", err, ran)
	}
	if st, _, err := s.Claim(ctx, k2); err != nil || st != Claimed {
		t.Fatalf("claim after the refused DoChecked: %v %v, want Claimed (released)", st, err)
	}
	// An absent key is found false.
	absent := Check{Key: s.Key("none"), Allow: func(v string, found bool) error {
		if found {
			return fmt.Errorf("found %q", v)
		}
		return nil
	}}
	if st, err := s.DoChecked(ctx, s.Key("evt", "3"), time.Hour, []Check{absent}, func(context.Context) error { return nil }); err != nil || st != Claimed {
		t.Fatalf("check of an absent key: %v %v", st, err)
	}
}

// Do returns once fn succeeded, without waiting for Redis to remember the
// key: a frozen Redis connection does not hold the caller.
func TestDoDoesNotWaitForTheConfirm(t *testing.T) {
	base, _ := testStore(t)
	s, proxy, _ := proxiedStore(t, base)
	ctx := context.Background()
	if _, _, err := s.Claim(ctx, s.Key("warm")); err != nil {
		t.Fatal(err)
	}
	k := s.Key("evt", "1")
	returned := make(chan error, 1)
	go func() {
		_, err := s.Do(ctx, k, time.Hour, func(context.Context) error {
			proxy.Freeze()
			return nil
		})
		returned <- err
	}()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second): // a deadlock guard, not a timing
		proxy.Thaw()
		t.Fatal("Do waited for the confirm's round trip")
	}
	proxy.Thaw()
	if st, _, err := s.Claim(ctx, k); err != nil || st != Done {
		t.Fatalf("claim after Do: %v %v, want Done", st, err)
	}
}

// A key Do returned for is done for every later claim through the same
// Store, although Do did not wait for the confirm: scripts run in the order
// they were queued. Replays from the same replica are duplicates, never
// "in progress".
func TestDoConfirmIsOrderedBeforeLaterClaims(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				k := s.Key("evt", fmt.Sprint(g), fmt.Sprint(i))
				if _, err := s.Do(ctx, k, time.Hour, func(context.Context) error { return nil }); err != nil {
					t.Error(err)
					return
				}
				if st, _, err := s.Claim(ctx, k); err != nil || st != Done {
					t.Errorf("claim right after Do of %s: %v %v, want Done", k, st, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Flush returns once the confirms Do queued are in Redis, as another
// client (another replica) sees it, and not before.
func TestFlushWaitsForQueuedConfirms(t *testing.T) {
	base, rdb := testStore(t)
	s, proxy, _ := proxiedStore(t, base)
	ctx := context.Background()
	if _, _, err := s.Claim(ctx, s.Key("warm")); err != nil {
		t.Fatal(err)
	}
	k := s.Key("evt", "1")
	if _, err := s.Do(ctx, k, time.Hour, func(context.Context) error {
		proxy.Freeze() // the confirm cannot reach Redis
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Flush(gone); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush with the confirm held back: %v, want it to wait (context.Canceled)", err)
	}
	proxy.Thaw()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if v := rdb.Get(ctx, k).Val(); v != doneValue {
		t.Fatalf("%s = %q after Flush, want %q", k, v, doneValue)
	}
}
