package bench

import (
	"strings"
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

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"single", ms(7), 0.99, 7 * time.Millisecond},
		{"median of odd", ms(1, 2, 3), 0.5, 2 * time.Millisecond},
		{"median of even is the lower", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of 100 is the 99th", hundred, 0.99, 99 * time.Millisecond},
		{"p50 of 100", hundred, 0.50, 50 * time.Millisecond},
		{"p99 of 10 is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{"q above 1 is the max", ms(1, 2), 1.5, 2 * time.Millisecond},
		{"q at 0 is the min", ms(1, 2), 0, time.Millisecond},
	}
	for _, c := range cases {
		if got := Percentile(c.sorted, c.q); got != c.want {
			t.Errorf("%s: Percentile(q=%v) = %v, want %v", c.name, c.q, got, c.want)
		}
	}
}

func TestSummarizeSorts(t *testing.T) {
	l := Summarize(ms(30, 10, 20, 40))
	if l.N != 4 || l.P50 != 20*time.Millisecond || l.P99 != 40*time.Millisecond || l.Max != 40*time.Millisecond {
		t.Fatalf("Summarize = %+v", l)
	}
}

func TestRate(t *testing.T) {
	if got := Rate(500, 250*time.Millisecond); got != 2000 {
		t.Errorf("Rate = %v, want 2000", got)
	}
	if got := Rate(5, 0); got != 0 {
		t.Errorf("Rate with zero duration = %v, want 0", got)
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tdispatcher\nVmPeak:\t  900000 kB\nVmHWM:\t   41236 kB\nVmRSS:\t   40000 kB\n"
	got, err := parseStatusKB(strings.NewReader(status), "VmHWM:")
	if err != nil || got != 41236<<10 {
		t.Fatalf("parseStatusKB = %d, %v; want %d", got, err, 41236<<10)
	}
	if _, err := parseStatusKB(strings.NewReader("VmRSS:\t1 kB\n"), "VmHWM:"); err == nil {
		t.Fatal("missing VmHWM: want an error")
	}
}

func TestSinkPath(t *testing.T) {
	phase, ep, ok := splitPath("/fanout10/7")
	if !ok || phase != "fanout10" || ep != 7 {
		t.Fatalf("splitPath = %q %d %v", phase, ep, ok)
	}
	for _, bad := range []string{"/", "/x", "/x/", "/x/y", "/x/-1", "x/1"} {
		if _, _, ok := splitPath(bad); ok {
			t.Errorf("splitPath(%q) accepted", bad)
		}
	}
}

func TestSumMetric(t *testing.T) {
	text := `# HELP hookyard_dispatcher_deferrals_total x
# TYPE hookyard_dispatcher_deferrals_total counter
hookyard_dispatcher_deferrals_total{reason="busy"} 3
hookyard_dispatcher_deferrals_total{reason="in_flight"} 4.5
hookyard_dispatcher_deferrals_total_other 100
hookyard_dispatcher_deliveries_total{outcome="retry"} 7
`
	if got := sumMetric(strings.NewReader(text), "hookyard_dispatcher_deferrals_total"); got != 7.5 {
		t.Errorf("sumMetric = %v, want 7.5", got)
	}
}
