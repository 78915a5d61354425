package loadtest

import (
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100ms
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"single", ms(7), 0.5, 7 * time.Millisecond},
		{"median of odd", ms(1, 2, 3), 0.5, 2 * time.Millisecond},
		{"median of even is the lower", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p51 of four", ms(1, 2, 3, 4), 0.51, 3 * time.Millisecond},
		{"p50 of 1..100", hundred, 0.50, 50 * time.Millisecond},
		// 0.99*100 is 99.00000000000001 in floating point; a naive ceil
		// would pick the 100th sample.
		{"p99 of 1..100", hundred, 0.99, 99 * time.Millisecond},
		{"p999 of 1..100 is the max", hundred, 0.999, 100 * time.Millisecond},
		{"p99 of 10 is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{"q=1 is the max", hundred, 1, 100 * time.Millisecond},
		{"q above 1 is the max", ms(1, 2), 1.5, 2 * time.Millisecond},
		{"q=0 is the min", hundred, 0, 1 * time.Millisecond},
	} {
		if got := Percentile(tc.sorted, tc.q); got != tc.want {
			t.Errorf("%s: Percentile(q=%v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
}

func TestRate(t *testing.T) {
	if got := Rate(5000, 2*time.Second); got != 2500 {
		t.Errorf("Rate(5000, 2s) = %v, want 2500", got)
	}
	if got := Rate(500, 250*time.Millisecond); got != 2000 {
		t.Errorf("Rate(500, 250ms) = %v, want 2000", got)
	}
	if got := Rate(10, 0); got != 0 {
		t.Errorf("Rate over zero time = %v, want 0", got)
	}
	if got := Rate(10, -time.Second); got != 0 {
		t.Errorf("Rate over negative time = %v, want 0", got)
	}
}
