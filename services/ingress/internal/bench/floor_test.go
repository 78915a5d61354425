package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseFloors(t *testing.T) {
	got, err := ParseFloors(" publish,dedupe ,")
	if err != nil || len(got) != 2 || got[0] != FloorPublish || got[1] != FloorDedupe {
		t.Fatalf("ParseFloors = %v, %v; want [publish dedupe]", got, err)
	}
	if got, err := ParseFloors(""); err != nil || len(got) != 0 {
		t.Fatalf("ParseFloors(\"\") = %v, %v; want none", got, err)
	}
	if _, err := ParseFloors("publish,nope"); err == nil {
		t.Fatal("ParseFloors accepted an unknown floor")
	}
}

// The report must name every floor below the target, and only those.
func TestReportNamesFloorsBelowTheTarget(t *testing.T) {
	r := Report{
		Saturated: Summary{Name: "ingress", Rate: 3000, OK: 1},
		Raw:       Summary{Name: "raw", Rate: 10000},
		Floors: []Floor{
			{Mode: FloorPublish, Summary: Summary{Rate: 6000, OK: 1}},
			{Mode: FloorHeaders, Summary: Summary{Rate: 4500, OK: 1}},
		},
	}
	var out bytes.Buffer
	r.printFloors(&out)
	s := out.String()
	if !strings.Contains(s, "BELOW") || !strings.Contains(s, "headers (0.45 x)") || strings.Contains(s, "publish (0.60 x)") {
		t.Fatalf("report does not name exactly the floor below 0.5 x:\n%s", s)
	}
	if !strings.Contains(s, "0.50") { // ingress / publish floor
		t.Fatalf("report lacks the ingress / floor ratio:\n%s", s)
	}

	r.Floors = r.Floors[:1]
	out.Reset()
	r.printFloors(&out)
	if strings.Contains(out.String(), "BELOW") || !strings.Contains(out.String(), "reachable") {
		t.Fatalf("a floor above the target reported as below:\n%s", out.String())
	}
}
