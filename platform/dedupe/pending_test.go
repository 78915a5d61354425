package dedupe

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Work that ends in Pending keeps its claim until Wait reports: a later
// Do is told the key is in progress, then finds it done if the work
// succeeded, or free again if it failed.
func TestPendingWorkSettlesTheClaimLater(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	errLate := errors.New("not answered yet")
	for _, tc := range []struct {
		name    string
		outcome error
		want    State
	}{
		{"succeeds", nil, Done},
		{"fails", errors.New("nacked"), Claimed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := s.Key("evt", tc.name)
			answer := make(chan error)
			_, err := s.Do(ctx, k, time.Hour, func(context.Context) error {
				return &Pending{Err: errLate, Wait: func(context.Context) error { return <-answer }}
			})
			if !errors.Is(err, errLate) {
				t.Fatalf("Do: %v, want the pending error", err)
			}
			if _, err := s.Do(ctx, k, time.Hour, func(context.Context) error { return nil }); !errors.Is(err, ErrInProgress) {
				t.Fatalf("Do while the first is pending: %v, want ErrInProgress", err)
			}
			answer <- tc.outcome
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			st, c, err := s.Claim(ctx, k)
			if err != nil || st != tc.want {
				t.Fatalf("claim after the outcome: %v %v, want %v", st, err, tc.want)
			}
			if st == Claimed {
				_ = s.Release(ctx, c)
			}
		})
	}
}
