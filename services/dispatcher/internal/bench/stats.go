package bench

import (
	"slices"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
)

// Latency condenses a set of latencies.
type Latency struct {
	N    int
	Mean time.Duration
	P50  time.Duration
	P99  time.Duration
	Max  time.Duration
}

// Summarize sorts lat in place and condenses it.
func Summarize(lat []time.Duration) Latency {
	slices.Sort(lat)
	l := Latency{N: len(lat), P50: loadtest.Percentile(lat, 0.50), P99: loadtest.Percentile(lat, 0.99)}
	if len(lat) > 0 {
		l.Max = lat[len(lat)-1]
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		l.Mean = sum / time.Duration(len(lat))
	}
	return l
}
