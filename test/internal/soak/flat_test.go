package soak

import (
	"strings"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	for _, c := range []struct {
		name   string
		values []float64
		floor  float64
		flat   bool
		reason bool
	}{
		// A leak: steady growth all the way.
		{"steady growth", []float64{10, 20, 30, 40, 50, 60, 70, 80}, 0, false, false},
		// Warm-up in the first quarter only, then level: flat.
		{"warm-up then level", []float64{1, 5, 100, 100, 101, 99, 100, 100}, 0, true, false},
		// Up 10 % exactly is still flat; 10.5 % is not.
		{"ten percent", []float64{0, 0, 100, 100, 0, 0, 110, 110}, 0, true, false},
		{"above ten percent", []float64{0, 0, 100, 100, 0, 0, 110.5, 110.5}, 0, false, false},
		// 30 → 40 goroutines is +33 % but within a floor of 20.
		{"within floor", []float64{30, 30, 30, 30, 40, 40, 40, 40}, 20, true, false},
		{"beyond floor", []float64{30, 30, 30, 30, 60, 60, 60, 60}, 20, false, false},
		// Shrinking is flat.
		{"shrinking", []float64{100, 100, 100, 100, 50, 50, 50, 50}, 0, true, false},
		// From nothing to something, beyond the floor, grows.
		{"from zero", []float64{0, 0, 0, 0, 0, 0, 5, 5}, 1, false, false},
		{"zero throughout", []float64{0, 0, 0, 0, 0, 0, 0, 0}, 0, true, false},
		{"too few", []float64{1, 2, 3, 4, 5, 6, 7}, 0, false, true},
	} {
		v := Judge(Series{Name: c.name, Values: c.values, Floor: c.floor})
		if (v.Reason != "") != c.reason {
			t.Errorf("%s: reason %q, want one: %v", c.name, v.Reason, c.reason)
			continue
		}
		if !c.reason && v.Flat != c.flat {
			t.Errorf("%s: flat %v, want %v (%s)", c.name, v.Flat, c.flat, v)
		}
	}
}

// The quarters are the second and the last of n samples, whatever n: 13
// samples make quarters of 3, [3,6) and [10,13).
func TestJudgeQuarters(t *testing.T) {
	values := []float64{9, 9, 9, 1, 2, 3, 9, 9, 9, 9, 4, 5, 6}
	v := Judge(Series{Name: "x", Values: values})
	if v.Second != 2 || v.Last != 5 {
		t.Fatalf("quarter means %v and %v, want 2 and 5", v.Second, v.Last)
	}
	if v.Flat {
		t.Fatalf("2 → 5 judged flat")
	}
	if s := v.String(); !strings.Contains(s, "GROWING") || !strings.Contains(s, "+150.0%") {
		t.Fatalf("verdict line %q", s)
	}
}

func TestSeriesOf(t *testing.T) {
	rows := []Row{
		{AckedTotal: 10, Delivered: 7, Queued: 3, RedisUsed: 2 * mib, Procs: map[string]Proc{"a": {Goroutines: 5, HeapInuse: 4 * mib, RSS: 8 * mib, FDs: 12}}},
		{AckedTotal: 20, Delivered: 20, Queued: -1, RedisUsed: 3 * mib, Procs: map[string]Proc{}},
	}
	got := map[string][]float64{}
	for _, s := range SeriesOf(rows, []string{"a"}) {
		got[s.Name] = s.Values
	}
	want := map[string][]float64{
		"a goroutines":              {5, 0},
		"a heap in use MiB":         {4, 0},
		"a RSS MiB":                 {8, 0},
		"a open fds":                {12, 0},
		"redis used_memory MiB":     {2, 3},
		"queued messages":           {3, -1},
		"backlog (acked-delivered)": {3, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	for name, w := range want {
		g := got[name]
		if len(g) != len(w) || g[0] != w[0] || g[1] != w[1] {
			t.Errorf("%s: %v, want %v", name, g, w)
		}
	}
}

func TestRowLine(t *testing.T) {
	r := Row{At: 61 * time.Second, Due: 100, Missed: 1, Acked: 98, Failed: 1, AckedTotal: 500, Delivered: 490, Queued: 7,
		P50: 12 * time.Millisecond, P99: 340 * time.Millisecond, RedisUsed: 1.5 * mib,
		Procs: map[string]Proc{"a": {Goroutines: 40, HeapInuse: 6.5 * mib, RSS: 30 * mib, FDs: 21}}}
	want := "1m01s\t100\t1\t98\t1\t490\t10\t7\t12ms\t340ms\t1.5\t40/6.5/30.0/21"
	if got := r.Line([]string{"a"}); got != want {
		t.Fatalf("line\n%q, want\n%q", got, want)
	}
}

// The drain's samples, with no traffic, must not be judged: they would
// make a growing last quarter look flat.
func TestJudgedLeavesOutTheDrain(t *testing.T) {
	rows := []Row{{At: time.Minute, Sending: true}, {At: 2 * time.Minute, Sending: true}, {At: 3 * time.Minute}}
	got := Judged(rows)
	if len(got) != 2 || got[1].At != 2*time.Minute {
		t.Fatalf("judged %v, want the first two rows", got)
	}
}
