package loadtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const exposition = `# HELP hookyard_dispatcher_deferrals_total x
# TYPE hookyard_dispatcher_deferrals_total counter
hookyard_dispatcher_deferrals_total{reason="busy"} 3
hookyard_dispatcher_deferrals_total{reason="in_flight"} 4.5
hookyard_dispatcher_deferrals_total_other 100
hookyard_dispatcher_deliveries_total{outcome="retry"} 7
# TYPE hookyard_ingress_confirm_seconds histogram
hookyard_ingress_confirm_seconds_bucket{le="0.005"} 2
hookyard_ingress_confirm_seconds_bucket{le="+Inf"} 4
hookyard_ingress_confirm_seconds_sum{source="a b}"} 0.25 1700000000000
hookyard_ingress_confirm_seconds_count 4
broken_line
not_a_number NaNx
`

func TestParseMetricsSumsLabelSets(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"hookyard_dispatcher_deferrals_total":       7.5, // two label sets
		"hookyard_dispatcher_deferrals_total_other": 100, // a longer name is another metric
		"hookyard_dispatcher_deliveries_total":      7,
		"hookyard_ingress_confirm_seconds_sum":      0.25, // timestamp dropped
		"hookyard_ingress_confirm_seconds_count":    4,
	} {
		if got := m[name]; got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{"broken_line", "not_a_number", "# TYPE hookyard_dispatcher_deferrals_total"} {
		if _, ok := m[name]; ok {
			t.Errorf("unreadable line %q was counted", name)
		}
	}
}

func TestScrapeMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(exposition))
	}))
	defer srv.Close()

	m, err := ScrapeMetrics(context.Background(), srv.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if got := m["hookyard_dispatcher_deferrals_total"]; got != 7.5 {
		t.Errorf("deferrals = %v, want 7.5", got)
	}
	if _, err := ScrapeMetrics(context.Background(), srv.URL+"/other"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("scrape of a 404 page: err = %v, want one naming the status", err)
	}
}
