package dispatcher

import (
	"strings"
	"testing"
	"time"
)

// The server-wide schedule must end within the retention: a retry of a
// message whose record expired has nothing to report its outcome to.
func TestNewRefusesScheduleLongerThanRetention(t *testing.T) {
	c := testConfig(newID())
	c.RetrySchedule, c.Retention = "168h,168h,168h,168h,168h", 30*24*time.Hour
	_, err := New(c, Deps{})
	if err == nil || !strings.Contains(err.Error(), "HOOKYARD_RETRY_SCHEDULE adds up to 840h0m0s") {
		t.Fatalf("New with a schedule longer than the retention: %v", err)
	}
	c.RetrySchedule = "168h,168h,168h,168h"
	if _, err := New(c, Deps{}); err != nil && strings.Contains(err.Error(), "HOOKYARD_RETRY_SCHEDULE") {
		t.Fatalf("New with a schedule within the retention: %v", err)
	}
}
