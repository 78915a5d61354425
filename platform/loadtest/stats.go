package loadtest

import "time"

// Percentile returns the q-quantile (0 < q <= 1) of sorted by the
// nearest-rank method: the smallest sample such that at least q of all
// samples are less than or equal to it. Nearest-rank never interpolates,
// so every figure is a latency some request really had, and with too few
// samples a high quantile degrades to the maximum instead of inventing a
// value. sorted must be ascending; an empty slice yields 0.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if q <= 0 {
		return sorted[0]
	}
	if q >= 1 {
		return sorted[n-1]
	}
	// rank = ceil(q*n), computed in integer millionths so that float error
	// cannot turn 0.99*100 into 99.00000000000001 and rank 100.
	qm := int64(q*1e6 + 0.5)
	rank := int((qm*int64(n) + 1e6 - 1) / 1e6)
	return sorted[max(rank, 1)-1]
}

// Rate returns n per second over d, or 0 for a non-positive d.
func Rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
