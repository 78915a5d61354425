package bench

import (
	"testing"
	"time"
)

func TestSummarizeSorts(t *testing.T) {
	const m = time.Millisecond
	l := Summarize([]time.Duration{30 * m, 10 * m, 20 * m, 40 * m})
	if l.N != 4 || l.P50 != 20*time.Millisecond || l.P99 != 40*time.Millisecond || l.Max != 40*time.Millisecond {
		t.Fatalf("Summarize = %+v", l)
	}
}

func TestSinkPath(t *testing.T) {
	phase, ep, ok := splitPath("/fanout10/7")
	if !ok || phase != "fanout10" || ep != 7 {
		t.Fatalf("splitPath = %q %d %v", phase, ep, ok)
	}
	for _, bad := range []string{"/", "/x", "/x/", "/x/y", "/x/-1", "x/1"} {
		if _, _, ok := splitPath(bad); ok {
			t.Errorf("splitPath(%q) accepted", bad)
		}
	}
}
