package retry_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/hookyard/hookyard/services/dispatcher/internal/retry"
)

// FuzzParseSchedule checks that any accepted schedule respects the limits
// and survives a FormatSchedule round trip.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{
		retry.DefaultSchedule, "5s", " 1m , 2h ", "100ms,1h30m", "", ",", "5s,,5m",
		"-1s", "0s", "1d", "168h", "169h", "9999999999h", "1e3s", ".5s", "1.5h", "5µs",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sched, err := retry.ParseSchedule(s)
		if err != nil {
			return
		}
		if len(sched) == 0 || len(sched) > retry.MaxScheduleEntries {
			t.Fatalf("ParseSchedule(%q) returned %d entries", s, len(sched))
		}
		for _, d := range sched {
			if d <= 0 || d > retry.MaxScheduleDelay {
				t.Fatalf("ParseSchedule(%q) returned out-of-range delay %v", s, d)
			}
		}
		back, err := retry.ParseSchedule(retry.FormatSchedule(sched))
		if err != nil || !slices.Equal(back, sched) {
			t.Fatalf("round trip of %q: %v, %v", s, back, err)
		}
		for attempt := range len(sched) + 2 {
			d, ok := retry.Delay(sched, attempt, 0.2, func() float64 { return 0.999 })
			if ok && (d < 0 || d > sched[max(attempt, 1)-1]*12/10+1) {
				t.Fatalf("Delay(%v, %d) = %v", sched, attempt, d)
			}
		}
	})
}

// FuzzRetryAfter checks that any Retry-After value a subscriber sends
// either is rejected or yields a delay inside the bounds.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{
		"120", "0", "  30 ", "99999999999999999999999999", "9223372037", "-5", "+5", "1.5",
		"Sat, 01 Mar 2025 12:10:00 GMT", "Saturday, 01-Mar-25 12:00:30 GMT",
		"Sat Mar  1 12:05:00 2025", "Fri, 31 Dec 9999 23:59:59 GMT", "tomorrow", "",
	} {
		f.Add(s, int64(1_740_830_400), int64(time.Second), int64(time.Hour))
	}
	f.Fuzz(func(t *testing.T, value string, nowUnix, lo, hi int64) {
		minDelay, maxDelay := time.Duration(lo), time.Duration(hi)
		h := http.Header{}
		h.Set("Retry-After", value)
		d, ok := retry.RetryAfter(h, time.Unix(nowUnix, 0), minDelay, maxDelay)
		if !ok {
			return
		}
		if d < minDelay {
			t.Fatalf("RetryAfter(%q) = %v below min %v", value, d, minDelay)
		}
		if maxDelay >= minDelay && d > maxDelay {
			t.Fatalf("RetryAfter(%q) = %v above max %v", value, d, maxDelay)
		}
	})
}
