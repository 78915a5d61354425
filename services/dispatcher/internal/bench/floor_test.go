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

// The floors with records or the admission and the POST floor get lines of their own, the
// POST floor compared with the POST /v1/messages burst, and count among
// the floors below a target.
func TestReportNamesRecordAndPostFloors(t *testing.T) {
	rep := Report{
		Phases:   []Result{{Name: burstName(1), Rate: 1000}, {Name: burstName(10), Rate: 2000}},
		Messages: []Result{{Name: MessagesBurst, Rate: 600}, {Name: "POST /v1/messages, paced", Rate: 100}},
		Ceiling:  Result{Rate: 10000},
		Floors: []Result{
			{Rate: 6000, Deliveries: 100, Usage: Usage{Dispatcher: 5 * time.Millisecond}},
			{Rate: 8000, Deliveries: 100, Usage: Usage{Dispatcher: 5 * time.Millisecond}},
		},
		RecordFloors: []Result{
			{Rate: 3000, Deliveries: 100, Usage: Usage{Dispatcher: 12 * time.Millisecond}}, // 0.30 x, 120 µs
			{Rate: 7000, Deliveries: 100, Usage: Usage{Dispatcher: 6 * time.Millisecond}},  // 0.70 x, 60 µs
		},
		AdmitFloors: []Result{{Rate: 2000, Deliveries: 100, Usage: Usage{Dispatcher: 15 * time.Millisecond}}}, // 0.20 x, 150 µs
		PostFloor:   Result{Rate: 1200, Deliveries: 100, Usage: Usage{Dispatcher: 30 * time.Millisecond}},     // 0.12 x, 300 µs
	}
	var out bytes.Buffer
	rep.printFloors(&out)
	s := out.String()
	for _, want := range []string{
		"fan-out 1 floor + delivered record is 0.30 x", "fan-out 1 floor + delivered record uses 120µs",
		"fan-out 10 floor + delivered record (", "fan-out 1 floor + admission is 0.20 x", "fan-out 1 floor + admission uses 150µs",
		"POST floor is 0.12 x", "POST floor uses 300µs",
		"dispatcher / floor 0.50", // POST /v1/messages burst 600 / POST floor 1200
		"FLOOR MISSES A TARGET",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	for _, bad := range []string{"fan-out 10 floor + delivered record is", "fan-out 10 floor + delivered record uses", "fan-out 1 floor is"} {
		if strings.Contains(s, bad) {
			t.Errorf("report names a floor that meets its target (%q):\n%s", bad, s)
		}
	}
}
