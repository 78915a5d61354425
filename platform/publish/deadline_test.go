package publish

import (
	"testing"
	"time"
)

// Publishes starting together share one deadline, and none ends early.
func TestDeadlinesShareATimerAndNeverEndEarly(t *testing.T) {
	d := newDeadlines(50 * time.Millisecond)
	start := time.Now()
	a, b := d.after(), d.after()
	if a != b {
		t.Fatal("two waits started within one granule got different channels")
	}
	<-a
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("deadline closed after %v, before the 50ms timeout", waited)
	}
	if c := d.after(); c == a {
		t.Fatal("a wait starting after the deadline passed got the closed channel")
	}
}
