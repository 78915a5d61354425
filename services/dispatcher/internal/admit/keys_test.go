package admit

import (
	"slices"
	"testing"
)

// The keys of an attempt, which the scripts and the status reads name by
// position.
func TestKeys(t *testing.T) {
	g := &Gate{prefix: "hy:d"}
	want := []string{"hy:d:done:{ep1}:m1", "hy:d:lock:{ep1}:m1", "hy:d:inflight:{ep1}", "hy:d:bucket:{ep1}", "hy:d:resv:{ep1}:m1", "hy:d:n:{ep1}:m1"}
	if got := g.keys("ep1", "m1"); !slices.Equal(got, want) {
		t.Fatalf("keys = %q, want %q", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { g.keys("ep1", "m1") }); n > 2 {
		t.Errorf("keys allocates %v times, want at most 2", n)
	}
}
