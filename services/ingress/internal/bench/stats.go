package bench

import (
	"slices"
	"time"
)

// Summary condenses one measured phase. Latency figures cover every request
// that got an answer (2xx or not); requests that failed at the transport
// level count in Errors only, since they have no meaningful latency.
type Summary struct {
	Name     string
	Sent     int // requests (or publishes) attempted
	OK       int // 2xx answers or confirmed publishes
	Non2xx   int // answers with any other status
	Errors   int // transport errors, timeouts, nacks
	Elapsed  time.Duration
	Rate     float64 // OK per second over Elapsed
	P50      time.Duration
	P99      time.Duration
	P999     time.Duration
	Max      time.Duration
	Offered  float64     // open-loop target rate; zero for closed-loop phases
	Statuses map[int]int // answers by status code
	FirstErr string      // first transport error, for the report
	Usage    Usage       // resources used during the phase
}

// Failed reports whether any request did not succeed.
func (s Summary) Failed() bool { return s.Non2xx > 0 || s.Errors > 0 }

// Percentile returns the q-quantile (0 < q <= 1) of sorted using the
// nearest-rank method: the smallest sample such that at least q of all
// samples are less than or equal to it. Nearest-rank never interpolates, so
// the reported p999 is a latency some request really had, and with fewer
// than 1000 samples it degrades to the maximum instead of inventing a value.
// sorted must be in ascending order; an empty slice yields 0.
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
	// rank = ceil(q*n), computed in integers of 1e6 to avoid float error
	// turning e.g. 0.99*100 into 99.00000000000001 and rank 100.
	qm := int64(q*1e6 + 0.5)
	rank := int((qm*int64(n) + 1e6 - 1) / 1e6)
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// Rate returns events per second, or 0 for a non-positive duration.
func Rate(n int, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return float64(n) / elapsed.Seconds()
}

// summarize sorts lat in place and fills the latency and rate fields of s.
func summarize(s Summary, lat []time.Duration) Summary {
	slices.Sort(lat)
	s.P50 = Percentile(lat, 0.50)
	s.P99 = Percentile(lat, 0.99)
	s.P999 = Percentile(lat, 0.999)
	if len(lat) > 0 {
		s.Max = lat[len(lat)-1]
	}
	s.Rate = Rate(s.OK, s.Elapsed)
	return s
}
