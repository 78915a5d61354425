package loadtest

import (
	"context"
	"fmt"
	"io"
	"math"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Histogram is a Prometheus histogram as scraped: cumulative counts per
// upper bound, in increasing order of bound, without the +Inf bucket
// (Count holds it).
type Histogram struct {
	Bounds []float64
	Counts []float64 // cumulative, one per bound
	Count  float64
}

// ScrapeHistogram reads the histogram name from the Prometheus text
// exposition at url, summed over its label sets. A histogram with no
// samples yet (or absent) is the zero Histogram.
func ScrapeHistogram(ctx context.Context, url, name string) (Histogram, error) {
	var h Histogram
	err := scrape(ctx, url, func(r io.Reader) (err error) {
		h, err = parseHistogram(r, name)
		return err
	})
	return h, err
}

func parseHistogram(r io.Reader, name string) (Histogram, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Histogram{}, fmt.Errorf("parse metrics: %w", err)
	}
	var h Histogram
	fam, ok := fams[name]
	if !ok {
		return h, nil
	}
	for _, m := range fam.GetMetric() {
		mh := m.GetHistogram()
		if mh == nil {
			return Histogram{}, fmt.Errorf("%s is not a histogram", name)
		}
		bs := mh.GetBucket()
		if h.Bounds == nil {
			for _, b := range bs {
				if !math.IsInf(b.GetUpperBound(), 1) {
					h.Bounds = append(h.Bounds, b.GetUpperBound())
				}
			}
			h.Counts = make([]float64, len(h.Bounds))
		}
		for _, b := range bs {
			for i, bound := range h.Bounds {
				if b.GetUpperBound() == bound {
					h.Counts[i] += float64(b.GetCumulativeCount())
				}
			}
		}
		h.Count += float64(mh.GetSampleCount())
	}
	return h, nil
}

// Sub returns the observations made between before and h: two scrapes of
// one histogram, before first.
func (h Histogram) Sub(before Histogram) Histogram {
	out := Histogram{Bounds: h.Bounds, Counts: make([]float64, len(h.Counts)), Count: h.Count - before.Count}
	for i := range h.Counts {
		out.Counts[i] = h.Counts[i]
		if i < len(before.Counts) {
			out.Counts[i] -= before.Counts[i]
		}
	}
	return out
}

// Quantile estimates the q-quantile (0 < q < 1) the way PromQL's
// histogram_quantile does: linearly within the bucket it falls in, from
// 0 for the first. It returns NaN with no observations, and the highest
// bound when the quantile lies beyond it.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count <= 0 || len(h.Bounds) == 0 {
		return math.NaN()
	}
	rank := q * h.Count
	lower, below := 0.0, 0.0
	for i, bound := range h.Bounds {
		if h.Counts[i] >= rank {
			in := h.Counts[i] - below
			if in <= 0 {
				return bound
			}
			return lower + (bound-lower)*(rank-below)/in
		}
		lower, below = bound, h.Counts[i]
	}
	return h.Bounds[len(h.Bounds)-1]
}
