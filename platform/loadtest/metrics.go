package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ScrapeMetrics reads the Prometheus text exposition at url and returns
// every sample summed over its label sets, keyed by sample name. A
// histogram h thus yields h_sum and h_count (and h_bucket, summed over
// all buckets, which is meaningless); a counter with labels yields its
// total.
func ScrapeMetrics(ctx context.Context, url string) (map[string]float64, error) {
	var m map[string]float64
	err := scrape(ctx, url, func(r io.Reader) (err error) {
		m, err = parseMetrics(r)
		return err
	})
	return m, err
}

// scrape GETs the exposition at url and hands its body (at most 16 MiB)
// to parse.
func scrape(ctx context.Context, url string, parse func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("scrape %s: %w", url, err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	if err := parse(io.LimitReader(resp.Body, 16<<20)); err != nil {
		return fmt.Errorf("scrape %s: %w", url, err)
	}
	return nil
}

// parseMetrics sums the samples of a text exposition by name. It skips
// lines it cannot read: the figures only explain a measurement.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 {
			name = line[:i]
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			rest, ok = line[j+1:], true
		}
		if !ok {
			continue
		}
		valStr, _, _ := strings.Cut(strings.TrimSpace(rest), " ") // drop a timestamp
		v, err := strconv.ParseFloat(valStr, 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return out, nil
}
