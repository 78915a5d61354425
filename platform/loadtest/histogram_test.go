package loadtest

import (
	"math"
	"strings"
	"testing"
)

const lagExposition = `# HELP lag_seconds Age.
# TYPE lag_seconds histogram
lag_seconds_bucket{le="0.001"} 10
lag_seconds_bucket{le="0.01"} 90
lag_seconds_bucket{le="0.1"} 100
lag_seconds_bucket{le="+Inf"} 100
lag_seconds_sum 0.5
lag_seconds_count 100
# TYPE other_total counter
other_total 7
`

func TestParseHistogramAndQuantile(t *testing.T) {
	h, err := parseHistogram(strings.NewReader(lagExposition), "lag_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if h.Count != 100 || len(h.Bounds) != 3 || h.Counts[1] != 90 {
		t.Fatalf("parsed %+v", h)
	}
	for _, c := range []struct{ q, want float64 }{
		{0.05, 0.0005},              // half way into the first bucket, from 0
		{0.5, 0.001 + 0.009*40/80},  // rank 50: 40 of the second bucket's 80
		{0.95, 0.01 + 0.09*5/10},    // rank 95: 5 of the third's 10
		{0.999, 0.01 + 0.09*9.9/10}, // still within the last finite bucket
	} {
		if got := h.Quantile(c.q); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("q%.3f = %g, want %g", c.q, got, c.want)
		}
	}
	// Observations between two scrapes.
	before, err := parseHistogram(strings.NewReader(strings.NewReplacer(
		`"0.001"} 10`, `"0.001"} 10`, `"0.01"} 90`, `"0.01"} 10`, `"0.1"} 100`, `"0.1"} 10`, `"+Inf"} 100`, `"+Inf"} 10`,
		"count 100", "count 10").Replace(lagExposition)), "lag_seconds")
	if err != nil {
		t.Fatal(err)
	}
	d := h.Sub(before)
	if d.Count != 90 || d.Counts[0] != 0 || d.Counts[1] != 80 || d.Counts[2] != 90 {
		t.Fatalf("difference %+v", d)
	}
	if got := d.Quantile(0.5); math.Abs(got-(0.001+0.009*45/80)) > 1e-12 {
		t.Fatalf("median of the difference %g", got)
	}
	// Beyond the last finite bound: that bound.
	over, _ := parseHistogram(strings.NewReader(strings.Replace(lagExposition, "count 100", "count 200", 1)), "lag_seconds")
	if got := over.Quantile(0.99); got != 0.1 {
		t.Fatalf("quantile beyond the buckets %g, want 0.1", got)
	}
	if got := (Histogram{}).Quantile(0.5); !math.IsNaN(got) {
		t.Fatalf("empty histogram quantile %g, want NaN", got)
	}
	// Absent: empty, no error; not a histogram: an error.
	if h, err := parseHistogram(strings.NewReader(lagExposition), "missing"); err != nil || h.Count != 0 {
		t.Fatalf("absent histogram: %+v, %v", h, err)
	}
	if _, err := parseHistogram(strings.NewReader(lagExposition), "other_total"); err == nil {
		t.Fatal("a counter read as a histogram")
	}
}
