package retry

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfterLength bounds the header value we bother parsing; the
// longest legitimate form (an RFC 850 date) is under 40 bytes.
const maxRetryAfterLength = 64

// RetryAfter reads a subscriber's Retry-After header (RFC 9110 §10.2.3):
// either a number of seconds or an HTTP-date, interpreted against now. The
// result is clamped to [minDelay, maxDelay] so a subscriber can neither
// make the dispatcher hammer it (Retry-After: 0) nor park a message
// indefinitely (Retry-After: 99999999); if maxDelay < minDelay, minDelay
// wins. A date in the past yields minDelay. It returns false when the
// header is absent or malformed, in which case the caller uses its
// schedule.
func RetryAfter(h http.Header, now time.Time, minDelay, maxDelay time.Duration) (time.Duration, bool) {
	value := strings.TrimSpace(h.Get("Retry-After"))
	if value == "" || len(value) > maxRetryAfterLength {
		return 0, false
	}
	var d time.Duration
	if isASCIIDigits(value) {
		secs, err := strconv.ParseUint(value, 10, 64)
		if err != nil || secs > uint64(math.MaxInt64/int64(time.Second)) {
			// Only range errors are possible here: far beyond any maxDelay.
			d = time.Duration(math.MaxInt64)
		} else {
			d = time.Duration(secs) * time.Second
		}
	} else {
		t, err := http.ParseTime(value)
		if err != nil {
			return 0, false
		}
		d = t.Sub(now) // saturates rather than overflowing
	}
	return clamp(d, minDelay, maxDelay), true
}

func clamp(d, lo, hi time.Duration) time.Duration {
	if d > hi {
		d = hi
	}
	if d < lo {
		d = lo
	}
	return d
}

func isASCIIDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Lengthen returns the delay before a retry given the scheduled delay and
// the subscriber's Retry-After: the header may lengthen the delay, up to
// maxDelay, but never shorten it. A subscriber answering "Retry-After: 1"
// to every attempt would otherwise run through the whole schedule in
// seconds and be dead-lettered hours early.
func Lengthen(scheduled time.Duration, h http.Header, now time.Time, maxDelay time.Duration) time.Duration {
	if d, ok := RetryAfter(h, now, 0, maxDelay); ok && d > scheduled {
		return d
	}
	return scheduled
}
