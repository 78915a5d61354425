package soak

import (
	"fmt"
	"math"
)

// Series is one figure sampled every interval, such as the goroutines of
// ingress.
type Series struct {
	Name   string
	Values []float64
	// Floor is the change too small to call growth whatever the ratio:
	// a few goroutines or a few MiB are noise, not a leak.
	Floor float64
}

// MinSamples is the fewest samples a verdict is given on: with fewer, a
// quarter is a single sample and the comparison says nothing.
const MinSamples = 8

// Verdict says whether a series stayed flat.
//
// A series is flat when the mean of its last quarter of samples is at
// most Threshold (relative) or Floor (absolute) above the mean of its
// second quarter. The first quarter is left out on purpose: it holds the
// warm-up (pools filling, retention windows not yet expired), which is
// growth that stops. A leak keeps growing, so it shows between the second
// and the last quarter. Shrinking is flat.
type Verdict struct {
	Name             string
	Second, Last     float64 // the quarters' means
	Change, Relative float64 // Last-Second, and that over Second
	Flat             bool
	// Reason is set when no verdict could be given (too few samples).
	Reason string
}

// Threshold is the relative growth between the second and the last
// quarter above which a series is not flat (unless within its Floor).
const Threshold = 0.10

// Judge gives the verdict on one series.
func Judge(s Series) Verdict {
	v := Verdict{Name: s.Name}
	n := len(s.Values)
	if n < MinSamples {
		v.Reason = fmt.Sprintf("%d samples, a verdict needs %d", n, MinSamples)
		return v
	}
	q := n / 4
	v.Second = mean(s.Values[q : 2*q])
	v.Last = mean(s.Values[n-q:])
	v.Change = v.Last - v.Second
	switch {
	case v.Second > 0:
		v.Relative = v.Change / v.Second
	case v.Change > 0:
		v.Relative = math.Inf(1)
	}
	v.Flat = v.Change <= s.Floor || v.Relative <= Threshold
	return v
}

// String is the verdict as one line of the report.
func (v Verdict) String() string {
	if v.Reason != "" {
		return fmt.Sprintf("%-28s no verdict: %s", v.Name, v.Reason)
	}
	word := "FLAT"
	if !v.Flat {
		word = "GROWING"
	}
	return fmt.Sprintf("%-28s %-7s 2nd quarter %s, last quarter %s (%+.1f%%)", v.Name, word, num(v.Second), num(v.Last), 100*v.Relative)
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

func num(x float64) string {
	if math.Abs(x) >= 100 || x == math.Trunc(x) {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.1f", x)
}
