package delay

import (
	"testing"
	"time"
)

func TestRungPicksLargestNotLonger(t *testing.T) {
	l := New("q")
	cases := []struct {
		d    time.Duration
		want time.Duration
		ok   bool
	}{
		{0, 0, false},
		{Tolerance - time.Millisecond, 0, false},
		{Tolerance, 100 * time.Millisecond, true}, // shorter than every rung: the smallest
		{999 * time.Millisecond, 500 * time.Millisecond, true},
		{time.Second, time.Second, true},
		{3 * time.Hour, time.Hour, true},
		{48 * time.Hour, 4 * time.Hour, true},
	}
	for _, c := range cases {
		got, ok := l.Rung(c.d)
		if got != c.want || ok != c.ok {
			t.Errorf("Rung(%v) = %v, %v; want %v, %v", c.d, got, ok, c.want, c.ok)
		}
	}
}

func TestKey(t *testing.T) {
	l := Ladder{Target: "hy.tasks", Rungs: []time.Duration{time.Second, time.Minute}}
	if got := l.Key(time.Time{}); got != "hy.tasks" {
		t.Errorf("zero time: %q", got)
	}
	if got := l.Key(time.Now().Add(-time.Hour)); got != "hy.tasks" {
		t.Errorf("past: %q", got)
	}
	if got := l.Key(time.Now().Add(90 * time.Second)); got != "hy.tasks.delay.v2.60000ms" {
		t.Errorf("90s: %q", got)
	}
	if got, want := l.Queues(), []string{"hy.tasks.delay.v2.1000ms", "hy.tasks.delay.v2.60000ms"}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Queues() = %v", got)
	}
	if got, want := l.LegacyQueues(), []string{"hy.tasks.delay.1000ms", "hy.tasks.delay.60000ms"}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("LegacyQueues() = %v", got)
	}
	if got := l.Exchange(); got != "hy.tasks.delay.return" {
		t.Errorf("Exchange() = %q", got)
	}
}
