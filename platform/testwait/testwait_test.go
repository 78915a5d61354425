package testwait

import (
	"testing"
	"time"
)

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	start := time.Now()
	waited := Eventually(t, 20*time.Second, "a clock to move on", func() bool { return time.Since(start) > 50*time.Millisecond })
	if waited < 50*time.Millisecond {
		t.Fatalf("returned after %v, before the condition held", waited)
	}
}
