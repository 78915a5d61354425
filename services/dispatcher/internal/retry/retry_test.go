package retry_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/services/dispatcher/internal/retry"
)

func TestDefaultSchedule(t *testing.T) {
	want := []time.Duration{
		5 * time.Second, 5 * time.Minute, 30 * time.Minute,
		2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
	}
	got := retry.DefaultDelays()
	if !slices.Equal(got, want) {
		t.Fatalf("DefaultDelays() = %v, want %v", got, want)
	}
	got[0] = time.Hour
	if retry.DefaultDelays()[0] != 5*time.Second {
		t.Fatal("modifying a returned schedule changed the default")
	}
	if back, err := retry.ParseSchedule(retry.FormatSchedule(want)); err != nil || !slices.Equal(back, want) {
		t.Fatalf("FormatSchedule round trip = %v, %v", back, err)
	}
}

func TestParseSchedule(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []time.Duration
		wantErr string
	}{
		{in: "5s", want: []time.Duration{5 * time.Second}},
		{in: " 5s , 1m ", want: []time.Duration{5 * time.Second, time.Minute}},
		{in: "100ms,1h30m", want: []time.Duration{100 * time.Millisecond, 90 * time.Minute}},
		{in: "168h", want: []time.Duration{retry.MaxScheduleDelay}},
		{in: retry.DefaultSchedule, want: retry.DefaultDelays()},
		{in: strings.Repeat("1s,", retry.MaxScheduleEntries-1) + "1s", want: slices.Repeat([]time.Duration{time.Second}, retry.MaxScheduleEntries)},
		{in: "", wantErr: "empty"},
		{in: "   ", wantErr: "empty"},
		{in: "5s,", wantErr: "entry 2 is empty"},
		{in: ",5s", wantErr: "entry 1 is empty"},
		{in: "5s,,5m", wantErr: "entry 2 is empty"},
		{in: "5", wantErr: `entry 1 "5" is not a duration`},
		{in: "5s,1d", wantErr: `entry 2 "1d" is not a duration`},
		{in: "5s;5m", wantErr: "is not a duration"},
		{in: "-5s", wantErr: "must be positive"},
		{in: "0s", wantErr: "must be positive"},
		{in: "169h", wantErr: "limit"},
		{in: "9999999999h", wantErr: "not a duration"},
		{in: strings.Repeat("1s,", retry.MaxScheduleEntries) + "1s", wantErr: "at most"},
	} {
		got, err := retry.ParseSchedule(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseSchedule(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseSchedule(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func fixed(v float64) func() float64 { return func() float64 { return v } }

func TestDelay(t *testing.T) {
	sched := retry.DefaultDelays()
	for _, tc := range []struct {
		name    string
		sched   []time.Duration
		attempt int
		jitter  float64
		rnd     func() float64
		want    time.Duration
		ok      bool
	}{
		{"after first attempt", sched, 1, 0, nil, 5 * time.Second, true},
		{"after second attempt", sched, 2, 0, nil, 5 * time.Minute, true},
		{"last retry", sched, 7, 0, nil, 10 * time.Hour, true},
		{"exhausted", sched, 8, 0, nil, 0, false},
		{"far past the end", sched, 1000, 0.2, fixed(0.5), 0, false},
		{"attempt zero treated as one", sched, 0, 0, nil, 5 * time.Second, true},
		{"negative attempt treated as one", sched, -3, 0, nil, 5 * time.Second, true},
		{"empty schedule never retries", nil, 1, 0.2, fixed(0.5), 0, false},
		{"jitter low end", sched, 2, 0.2, fixed(0), 4 * time.Minute, true},
		{"jitter middle", sched, 2, 0.2, fixed(0.5), 5 * time.Minute, true},
		{"jitter high end", sched, 2, 0.2, fixed(1), 6 * time.Minute, true},
		{"jitter quarter", sched, 1, 0.2, fixed(0.25), 4500 * time.Millisecond, true},
		{"rnd out of range clamped", sched, 1, 0.2, fixed(7), 6 * time.Second, true},
		{"rnd NaN treated as middle", sched, 1, 0.2, fixed(math.NaN()), 5 * time.Second, true},
		{"jitter above one clamped", sched, 1, 3, fixed(0), 0, true},
		{"negative jitter means none", sched, 1, -0.5, fixed(0), 5 * time.Second, true},
		{"NaN jitter means none", sched, 1, math.NaN(), fixed(0), 5 * time.Second, true},
		{"huge delay saturates", []time.Duration{math.MaxInt64}, 1, 0.2, fixed(1), math.MaxInt64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := retry.Delay(tc.sched, tc.attempt, tc.jitter, tc.rnd)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("Delay = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestDelayDefaultRandomStaysInBand(t *testing.T) {
	sched := []time.Duration{10 * time.Second}
	lo, hi := 8*time.Second, 12*time.Second
	distinct := map[time.Duration]bool{}
	for range 1000 {
		d, ok := retry.Delay(sched, 1, 0.2, nil)
		if !ok || d < lo || d > hi {
			t.Fatalf("Delay = %v, %v; want within [%v, %v]", d, ok, lo, hi)
		}
		distinct[d] = true
	}
	if len(distinct) < 100 {
		t.Fatalf("only %d distinct delays in 1000 draws: jitter is not applied", len(distinct))
	}
}

// timeoutErr mimics an I/O deadline error from the net package.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	blocked := fmt.Errorf("deliver: %w", &ssrf.BlockedError{Addr: netip.MustParseAddr("10.0.0.1"), Reason: "private network"})
	connRefused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name        string
		status      int
		err         error
		retry4xx    bool
		want        retry.Outcome
		wantClass   retry.Class
		wantRetries bool
	}{
		{"200", 200, nil, false, retry.Delivered, retry.ClassNone, false},
		{"201", 201, nil, false, retry.Delivered, retry.ClassNone, false},
		{"204", 204, nil, false, retry.Delivered, retry.ClassNone, false},
		{"299", 299, nil, false, retry.Delivered, retry.ClassNone, false},
		{"301", 301, nil, false, retry.Retry, retry.ClassRedirect, true},
		{"302", 302, nil, false, retry.Retry, retry.ClassRedirect, true},
		{"304", 304, nil, false, retry.Retry, retry.ClassRedirect, true},
		{"308", 308, nil, false, retry.Retry, retry.ClassRedirect, true},
		{"400", 400, nil, false, retry.Permanent, retry.ClassStatus, false},
		{"401", 401, nil, false, retry.Permanent, retry.ClassStatus, false},
		{"404", 404, nil, false, retry.Permanent, retry.ClassStatus, false},
		{"404 with retryClientErrors", 404, nil, true, retry.Retry, retry.ClassStatus, true},
		{"408", 408, nil, false, retry.Retry, retry.ClassStatus, true},
		{"410", 410, nil, false, retry.Gone, retry.ClassStatus, false},
		{"410 with retryClientErrors", 410, nil, true, retry.Gone, retry.ClassStatus, false},
		{"413", 413, nil, false, retry.Permanent, retry.ClassStatus, false},
		{"425", 425, nil, false, retry.Retry, retry.ClassStatus, true},
		{"429", 429, nil, false, retry.Retry, retry.ClassStatus, true},
		{"500", 500, nil, false, retry.Retry, retry.ClassStatus, true},
		{"502", 502, nil, false, retry.Retry, retry.ClassStatus, true},
		{"503", 503, nil, false, retry.Retry, retry.ClassStatus, true},
		{"504", 504, nil, false, retry.Retry, retry.ClassStatus, true},
		{"100 informational", 100, nil, false, retry.Retry, retry.ClassStatus, true},
		{"zero status", 0, nil, false, retry.Retry, retry.ClassStatus, true},
		{"nonstandard 600", 600, nil, false, retry.Retry, retry.ClassStatus, true},
		{"blocked", 0, blocked, false, retry.Blocked, retry.ClassBlocked, true},
		{"deadline", 0, fmt.Errorf("post: %w", context.DeadlineExceeded), false, retry.Retry, retry.ClassTimeout, true},
		{"os deadline", 0, os.ErrDeadlineExceeded, false, retry.Retry, retry.ClassTimeout, true},
		{"net timeout", 0, &net.OpError{Op: "read", Err: timeoutErr{}}, false, retry.Retry, retry.ClassTimeout, true},
		{"connection refused", 0, connRefused, false, retry.Retry, retry.ClassConnect, true},
		{"connection reset", 0, io.ErrUnexpectedEOF, false, retry.Retry, retry.ClassConnect, true},
		{"dns failure", 0, &net.DNSError{Err: "no such host", Name: "nope.example", IsNotFound: true}, false, retry.Retry, retry.ClassConnect, true},
		{"tls alert", 0, &net.OpError{Op: "remote error", Err: tls.AlertError(40)}, false, retry.Retry, retry.ClassTLS, true},
		{"tls record header", 0, tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, false, retry.Retry, retry.ClassTLS, true},
		{"error wins over status", 200, connRefused, false, retry.Retry, retry.ClassConnect, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := retry.Classify(tc.status, tc.err, tc.retry4xx)
			if got != tc.want {
				t.Errorf("Classify = %v, want %v", got, tc.want)
			}
			if got.Retryable() != tc.wantRetries {
				t.Errorf("%v.Retryable() = %v, want %v", got, got.Retryable(), tc.wantRetries)
			}
			if class := retry.ErrorClass(tc.status, tc.err); class != tc.wantClass {
				t.Errorf("ErrorClass = %q, want %q", class, tc.wantClass)
			}
		})
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[retry.Outcome]string{
		retry.Delivered: "delivered", retry.Retry: "retry", retry.Gone: "gone",
		retry.Permanent: "permanent", retry.Blocked: "blocked", 0: "unknown",
	} {
		if o.String() != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", int(o), o.String(), want)
		}
	}
}

// TestErrorClassRealErrors classifies errors produced by real HTTP
// exchanges, so a change in how net/http wraps them is caught.
func TestErrorClassRealErrors(t *testing.T) {
	loopback := ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}

	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
		defer srv.Close()
		defer close(release)
		client := loopback.Client(ssrf.ClientOptions{Timeout: 100 * time.Millisecond})
		_, err := client.Get(srv.URL)
		assertClass(t, err, retry.ClassTimeout, retry.Retry)
	})

	t.Run("tls", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		// The server logs the client's aborted handshake; keep test output clean.
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		srv.StartTLS()
		defer srv.Close()
		_, err := loopback.Client(ssrf.ClientOptions{}).Get(srv.URL) // certificate is not trusted
		assertClass(t, err, retry.ClassTLS, retry.Retry)
	})

	t.Run("connect", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there any more
		_, err = loopback.Client(ssrf.ClientOptions{}).Get("http://" + addr + "/")
		assertClass(t, err, retry.ClassConnect, retry.Retry)
	})

	t.Run("blocked", func(t *testing.T) {
		_, err := ssrf.Policy{}.Client(ssrf.ClientOptions{}).Get("http://169.254.169.254/latest/meta-data/")
		assertClass(t, err, retry.ClassBlocked, retry.Blocked)
	})
}

func assertClass(t *testing.T, err error, class retry.Class, outcome retry.Outcome) {
	t.Helper()
	if err == nil {
		t.Fatal("request succeeded")
	}
	if got := retry.ErrorClass(0, err); got != class {
		t.Errorf("ErrorClass(%v) = %q, want %q", err, got, class)
	}
	if got := retry.Classify(0, err, false); got != outcome {
		t.Errorf("Classify(%v) = %v, want %v", err, got, outcome)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	const lo, hi = time.Second, time.Hour
	for _, tc := range []struct {
		name   string
		values []string // nil: header absent
		lo, hi time.Duration
		want   time.Duration
		ok     bool
	}{
		{"absent", nil, lo, hi, 0, false},
		{"empty", []string{""}, lo, hi, 0, false},
		{"seconds", []string{"120"}, lo, hi, 2 * time.Minute, true},
		{"seconds with spaces", []string{"  30 "}, lo, hi, 30 * time.Second, true},
		{"zero clamped up", []string{"0"}, lo, hi, lo, true},
		{"large clamped down", []string{"86400"}, lo, hi, hi, true},
		{"overflowing seconds clamped", []string{"99999999999999999999999999"}, lo, hi, hi, true},
		{"just past int64 seconds", []string{"9223372037"}, lo, hi, hi, true},
		{"negative", []string{"-5"}, lo, hi, 0, false},
		{"plus sign", []string{"+5"}, lo, hi, 0, false},
		{"fraction", []string{"1.5"}, lo, hi, 0, false},
		{"unit suffix", []string{"5s"}, lo, hi, 0, false},
		{"IMF-fixdate", []string{"Sat, 01 Mar 2025 12:10:00 GMT"}, lo, hi, 10 * time.Minute, true},
		{"RFC 850 date", []string{"Saturday, 01-Mar-25 12:00:30 GMT"}, lo, hi, 30 * time.Second, true},
		{"ANSI C date", []string{"Sat Mar  1 12:05:00 2025"}, lo, hi, 5 * time.Minute, true},
		{"date in the past", []string{"Fri, 28 Feb 2025 12:00:00 GMT"}, lo, hi, lo, true},
		{"date far ahead", []string{"Fri, 31 Dec 9999 23:59:59 GMT"}, lo, hi, hi, true},
		{"malformed date", []string{"tomorrow"}, lo, hi, 0, false},
		{"overlong", []string{strings.Repeat("1", 65)}, lo, hi, 0, false},
		{"first value wins", []string{"10", "20"}, lo, hi, 10 * time.Second, true},
		{"max below min", []string{"30"}, time.Minute, time.Second, time.Minute, true},
		{"no bounds", []string{"30"}, 0, math.MaxInt64, 30 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.values {
				h.Add("Retry-After", v)
			}
			got, ok := retry.RetryAfter(h, now, tc.lo, tc.hi)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("RetryAfter(%q) = %v, %v; want %v, %v", tc.values, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestLengthen(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	h := func(v string) http.Header { return http.Header{"Retry-After": {v}} }
	for _, tc := range []struct {
		scheduled time.Duration
		header    http.Header
		want      time.Duration
	}{
		{5 * time.Minute, h("1"), 5 * time.Minute},
		{5 * time.Minute, h("600"), 10 * time.Minute},
		{5 * time.Minute, h("99999999"), 6 * time.Hour},
		{7 * time.Hour, h("99999999"), 7 * time.Hour},
		{5 * time.Minute, h("soon"), 5 * time.Minute},
		{5 * time.Minute, nil, 5 * time.Minute},
		{5 * time.Second, h(now.Add(time.Minute).Format(http.TimeFormat)), time.Minute},
	} {
		if got := retry.Lengthen(tc.scheduled, tc.header, now, 6*time.Hour); got != tc.want {
			t.Errorf("Lengthen(%v, %v) = %v, want %v", tc.scheduled, tc.header, got, tc.want)
		}
	}
}
