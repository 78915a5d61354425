package bench

import (
	"slices"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
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

// summarize sorts lat in place and fills the latency and rate fields of s.
func summarize(s Summary, lat []time.Duration) Summary {
	slices.Sort(lat)
	s.P50 = loadtest.Percentile(lat, 0.50)
	s.P99 = loadtest.Percentile(lat, 0.99)
	s.P999 = loadtest.Percentile(lat, 0.999)
	if len(lat) > 0 {
		s.Max = lat[len(lat)-1]
	}
	s.Rate = loadtest.Rate(s.OK, s.Elapsed)
	return s
}
