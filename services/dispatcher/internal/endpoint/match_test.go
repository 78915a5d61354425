package endpoint

import "testing"

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, key string
		want         bool
	}{
		{"stripe.invoice.paid", "stripe.invoice.paid", true},
		{"stripe.invoice.paid", "stripe.invoice", false},
		{"stripe.*", "stripe.invoice", true},
		{"stripe.*", "stripe.invoice.paid", false},
		{"stripe.#", "stripe", true},
		{"stripe.#", "stripe.invoice.paid", true},
		{"#", "a.b.c", true},
		{"*.invoice.*", "stripe.invoice.paid", true},
		{"#.paid", "stripe.invoice.paid", true},
		{"#.paid", "paid", true},
		{"#.#.paid", "x.paid", true},
		{"a.#.z", "a.z", true},
		{"a.#.z", "a.b.c.z", true},
		{"a.#.z", "a.b.c", false},
		{"*", "a.b", false},
		{"github.push", "stripe.push", false},
	} {
		if got := Match(tc.pattern, tc.key); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.key, got, tc.want)
		}
	}
	if !MatchAny(nil, "x.y") {
		t.Error("empty event_types must match everything")
	}
}

func TestValidatePatterns(t *testing.T) {
	for _, bad := range [][]string{{""}, {"a..b"}, {".a"}, {"a."}, {"a*.b"}, {"st#ripe"}} {
		if err := ValidatePatterns(bad); err == nil {
			t.Errorf("ValidatePatterns(%q) accepted", bad)
		}
	}
	if err := ValidatePatterns([]string{"stripe.*", "github.#", "#", "app.invoice.paid"}); err != nil {
		t.Errorf("valid patterns refused: %v", err)
	}
}
