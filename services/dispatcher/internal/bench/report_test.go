package bench

import (
	"strings"
	"testing"
	"time"
)

func TestRatioAgreesWithVerdict(t *testing.T) {
	for _, c := range []struct {
		x, threshold float64
		want         string
	}{
		{0.499, 0.5, "0.499"},   // "0.50" would read as met
		{0.4999, 0.5, "0.4999"}, // as many digits as it takes
		{0.5, 0.5, "0.50"},
		{0.501, 0.5, "0.501"}, // "0.50" would sit on the threshold
		{1.503, 1.5, "1.503"},
		{0.73, 0.5, "0.73"},
		{0.4999999999, 0.5, "0.500000"}, // bounded at six
	} {
		if got := ratio(c.x, c.threshold); got != c.want {
			t.Errorf("ratio(%v, %v) = %q, want %q", c.x, c.threshold, got, c.want)
		}
	}
}

func TestSummarizeMean(t *testing.T) {
	const m = time.Millisecond
	if l := Summarize([]time.Duration{1 * m, 2 * m, 6 * m}); l.Mean != 3*m {
		t.Fatalf("Mean = %v, want 3ms", l.Mean)
	}
	if l := Summarize(nil); l != (Latency{}) {
		t.Fatalf("Summarize(nil) = %+v", l)
	}
}

func TestPacedRate(t *testing.T) {
	res := []Result{{Name: burstName(10), Rate: 4000}, {Name: pacedName(10), Offered: 1000}}
	if got := pacedRate(res, 10); got != 100 {
		t.Fatalf("pacedRate = %v, want 100 events/s", got)
	}
	if got := pacedRate(res[:1], 10); got != 0 {
		t.Fatalf("pacedRate without a paced phase = %v, want 0", got)
	}
}

// The floors' paced rows stand under the dispatcher's paced phase of their
// path, with the ratio of the p99s, and the targets say which miss.
func TestPrintPacedFloors(t *testing.T) {
	const ms = time.Millisecond
	lat := func(p50, p99 time.Duration) Latency { return Latency{N: 100, P50: p50, P99: p99, Max: p99} }
	d1 := Result{Name: pacedName(1), Deliveries: 100, Offered: 500, Lat: lat(3*ms, 30*ms),
		Confirm: Latency{Mean: 4 * ms, P99: 25 * ms}, Usage: Usage{Dispatcher: time.Second}}
	fl := Result{Name: "floor: consumer+POST, fan-out 1, paced", Deliveries: 100, Offered: 500, Lat: lat(2*ms, 24*ms),
		Consume: Latency{P50: 1500 * time.Microsecond, P99: 21 * ms}}
	msg := Result{Name: MessagesPaced, Deliveries: 100, Offered: 300, Lat: lat(4*ms, 18*ms), Usage: Usage{Dispatcher: time.Second}}
	pf := Result{Name: "POST floor, paced", Deliveries: 100, Offered: 300, Lat: lat(2*ms, 12*ms)}
	rep := Report{
		Phases: []Result{d1}, Messages: []Result{msg},
		PacedFloors: []PacedFloor{{Floor: fl, Dispatcher: pacedName(1)}, {Floor: pf, Dispatcher: MessagesPaced}},
	}
	var b strings.Builder
	rep.Print(&b)
	out := b.String()
	_, table, ok := strings.Cut(out, "paced phases beside the floors")
	if !ok {
		t.Fatalf("no paced table in:\n%s", out)
	}
	table, _, _ = strings.Cut(table, "targets:")
	find := func(prefix string) string {
		for _, l := range strings.Split(table, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return l
			}
		}
		t.Fatalf("no paced row %q in:\n%s", prefix, out)
		return ""
	}
	if l := find("floor: consumer+POST, fan-out 1, paced"); !strings.HasSuffix(strings.TrimSpace(l), "1.25") {
		t.Errorf("fan-out 1 floor row lacks dispatcher p99 / floor p99 = 1.25: %q", l)
	}
	if l := find("POST floor, paced"); !strings.HasSuffix(strings.TrimSpace(l), "1.50") {
		t.Errorf("POST floor row lacks 1.50: %q", l)
	}
	if l := find("floor: consumer+POST, fan-out 1, paced"); !strings.Contains(l, "1.5ms") || !strings.Contains(l, "21.0ms") {
		t.Errorf("floor row lacks publish to consume p50 and p99: %q", l)
	}
	if l := find(pacedName(1)); !strings.Contains(l, "4.0ms") || !strings.Contains(l, "25.0ms") {
		t.Errorf("dispatcher row lacks the confirm mean and p99: %q", l)
	}
	for _, want := range []string{
		"fan-out 1, paced: p50 <= 5ms, p99 <= 20ms:  3.0ms, 30.0ms  NOT MET",
		"    floor: consumer+POST, fan-out 1, paced at the same rate:  2.0ms, 24.0ms  NOT MET",
		"    POST floor, paced at the same rate:  2.0ms, 12.0ms  met",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// A floor at 0.499 x the bare loop is listed as below the 0.5 target, and
// its figure must not read 0.50 there.
func TestFloorRatioPrintedOnItsVerdictsSide(t *testing.T) {
	rep := Report{
		Ceiling: Result{Rate: 10000},
		Floors:  []Result{{Rate: 4990, Deliveries: 100, Usage: Usage{Dispatcher: time.Millisecond}}},
	}
	var b strings.Builder
	rep.printFloors(&b)
	if s := b.String(); !strings.Contains(s, "fan-out 1 floor is 0.499 x the bare loop") || strings.Contains(s, "0.50 x") {
		t.Fatalf("0.499 printed as reaching 0.5:\n%s", s)
	}
}
