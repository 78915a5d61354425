package topic

import (
	"strings"
	"testing"
)

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

func TestMatchManyHashes(t *testing.T) {
	pattern := strings.Repeat("#.", 40) + "z"
	key := strings.Repeat("a.", 60) + "b"
	if Match(pattern, key) {
		t.Fatal("matched a key that does not end in z")
	}
}

func TestValidate(t *testing.T) {
	for _, bad := range []string{"", "a..b", "a.b*", "#x"} {
		if Validate(bad) == nil {
			t.Errorf("Validate(%q) accepted", bad)
		}
	}
	for _, good := range []string{"#", "a.*.c", "stripe.customer.#"} {
		if err := Validate(good); err != nil {
			t.Errorf("Validate(%q): %v", good, err)
		}
	}
}
