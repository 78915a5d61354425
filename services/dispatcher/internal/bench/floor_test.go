package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// The report must name each floor below a target, and only those.
func TestReportNamesFloorsBelowTheTargets(t *testing.T) {
	rep := Report{
		Phases:  []Result{{Name: burstName(1), Rate: 1000}, {Name: burstName(10), Rate: 2000}},
		Ceiling: Result{Rate: 10000},
		Floors: []Result{
			{Rate: 4000, Deliveries: 100, Usage: Usage{Dispatcher: 5 * time.Millisecond}},  // 0.40 x, 50 µs
			{Rate: 8000, Deliveries: 100, Usage: Usage{Dispatcher: 20 * time.Millisecond}}, // 0.80 x, 200 µs
		},
	}
	var out bytes.Buffer
	rep.printFloors(&out)
	s := out.String()
	for _, want := range []string{"fan-out 1 floor is 0.40 x", "fan-out 10 floor uses 200µs", "dispatcher / floor 0.25"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	for _, bad := range []string{"fan-out 10 floor is", "fan-out 1 floor uses"} {
		if strings.Contains(s, bad) {
			t.Errorf("report names a floor that meets its target (%q):\n%s", bad, s)
		}
	}

	rep.Floors = []Result{{Rate: 6000, Deliveries: 100, Usage: Usage{Dispatcher: time.Millisecond}}}
	out.Reset()
	rep.printFloors(&out)
	if strings.Contains(out.String(), "MISSES") || !strings.Contains(out.String(), "reachable") {
		t.Fatalf("a floor meeting both targets reported as missing one:\n%s", out.String())
	}
}
