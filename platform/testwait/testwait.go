// Package testwait is how tests wait for something that happens in
// another goroutine or process: by polling, with a generous deadline, so
// that a slow machine makes a test slower, never flaky.
package testwait

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds and fails the test if it does not
// within timeout. It returns how long it waited.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
