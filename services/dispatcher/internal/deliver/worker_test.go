package deliver

import (
	"testing"
	"time"
)

func TestDeferBackoff(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for n, w := range want {
		if got := DeferBackoff(n); got != w {
			t.Errorf("DeferBackoff(%d) = %v, want %v", n, got, w)
		}
	}
	for _, n := range []int{-1, 1000, 1 << 30} {
		if got := DeferBackoff(n); got < deferDelay || got > maxDeferDelay {
			t.Errorf("DeferBackoff(%d) = %v, outside [%v, %v]", n, got, deferDelay, maxDeferDelay)
		}
	}
}
