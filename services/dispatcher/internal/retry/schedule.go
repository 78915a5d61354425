// Package retry holds the dispatcher's delivery retry policy: when to try
// again, whether a response is worth retrying at all, and how to honour a
// subscriber's Retry-After.
package retry

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// DefaultSchedule is the default value of HOOKYARD_RETRY_SCHEDULE: the
// delays before each retry after the first attempt, so a message is tried
// up to eight times over roughly 28 hours. It is a string, not a
// slice, so that no caller can modify the default; DefaultDelays returns
// it parsed.
const DefaultSchedule = "5s,5m,30m,2h,5h,10h,10h"

// Limits on a schedule. They keep a mistyped setting from keeping messages
// around for months and bound the work of parsing untrusted text.
const (
	MaxScheduleEntries = 50
	MaxScheduleDelay   = 7 * 24 * time.Hour
)

// DefaultDelays returns DefaultSchedule parsed, as a new slice each call.
func DefaultDelays() []time.Duration {
	d, err := ParseSchedule(DefaultSchedule)
	if err != nil {
		// DefaultSchedule is a constant checked by the tests.
		panic(fmt.Sprintf("retry: default schedule does not parse: %v", err))
	}
	return d
}

// ParseSchedule parses a comma-separated list of Go durations such as
// "5s,5m,30m,2h". Each entry is the delay before one more retry. Entries
// must be positive and at most MaxScheduleDelay; spaces around entries are
// ignored. An empty schedule is an error, since it would silently turn off
// retries: configure a single short delay instead if that is wanted.
func ParseSchedule(s string) ([]time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("retry schedule is empty: give comma-separated delays such as " + DefaultSchedule)
	}
	if n := strings.Count(s, ",") + 1; n > MaxScheduleEntries {
		return nil, fmt.Errorf("retry schedule has %d entries, at most %d allowed", n, MaxScheduleEntries)
	}
	entries := strings.Split(s, ",")
	out := make([]time.Duration, 0, len(entries))
	for i, raw := range entries {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			return nil, fmt.Errorf("retry schedule entry %d is empty (stray comma?)", i+1)
		}
		d, err := time.ParseDuration(entry)
		if err != nil {
			return nil, fmt.Errorf("retry schedule entry %d %q is not a duration like 30s or 2h: %w", i+1, entry, err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("retry schedule entry %d %q must be positive", i+1, entry)
		}
		if d > MaxScheduleDelay {
			return nil, fmt.Errorf("retry schedule entry %d %q is longer than the %s limit", i+1, entry, MaxScheduleDelay)
		}
		out = append(out, d)
	}
	return out, nil
}

// FormatSchedule is the inverse of ParseSchedule, for logs and for showing
// the effective configuration.
func FormatSchedule(schedule []time.Duration) string {
	parts := make([]string, len(schedule))
	for i, d := range schedule {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

// Delay returns how long to wait after a failed attempt before the next
// one. attempt is the 1-based number of the attempt that just failed: after
// attempt 1 the wait is schedule[0]. It returns false once the schedule is
// exhausted, meaning the message has failed for good; an attempt below 1 is
// treated as 1.
//
// The delay is spread by ±jitter (0.2 means ±20%) so that deliveries that
// failed together, for example during a subscriber's outage, do not all
// come back at the same instant. jitter is clamped to [0, 1]. rnd must
// return values in [0, 1); nil uses math/rand/v2, and tests pass a fixed
// function.
func Delay(schedule []time.Duration, attempt int, jitter float64, rnd func() float64) (time.Duration, bool) {
	attempt = max(attempt, 1)
	if attempt > len(schedule) {
		return 0, false
	}
	base := schedule[attempt-1]
	if math.IsNaN(jitter) || jitter <= 0 || base <= 0 {
		return max(base, 0), true
	}
	jitter = min(jitter, 1)
	if rnd == nil {
		rnd = rand.Float64
	}
	r := rnd()
	if math.IsNaN(r) {
		r = 0.5
	}
	r = min(max(r, 0), 1)
	scaled := float64(base) * (1 + jitter*(2*r-1))
	if scaled >= math.MaxInt64 {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(max(scaled, 0)), true
}
