package listen

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzCursor: a cursor comes from the client; checking and comparing one
// never panics, and before is a strict order on valid cursors.
func FuzzCursor(f *testing.F) {
	for _, s := range []string{"0-0", "1733130000000-0", "1733130000000-12", "", "-", "1-", "-1", "x-1", "18446744073709551615-18446744073709551615", "18446744073709551616-0"} {
		f.Add(s, "1733130000000-1")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		va, vb := validCursor(a), validCursor(b)
		if !va || !vb {
			return
		}
		if before(a, a) {
			t.Fatalf("before(%q, %q) = true", a, a)
		}
		if before(a, b) && before(b, a) {
			t.Fatalf("%q and %q are each before the other", a, b)
		}
		if !before(a, b) && !before(b, a) && canon(a) != canon(b) {
			t.Fatalf("%q and %q differ but neither is before the other", a, b)
		}
	})
}

func canon(c string) string {
	ms, seq, _ := strings.Cut(c, "-")
	x, _ := strconv.ParseUint(ms, 10, 64)
	y, _ := strconv.ParseUint(seq, 10, 64)
	return strconv.FormatUint(x, 10) + "-" + strconv.FormatUint(y, 10)
}

func TestValidCursor(t *testing.T) {
	for c, want := range map[string]bool{"0-0": true, "1733130000000-3": true, "": false, "abc": false, "1-": false, "-1": false, "1-2-3": false, "+1-2": false} {
		if got := validCursor(c); got != want {
			t.Errorf("validCursor(%q) = %v, want %v", c, got, want)
		}
	}
}
