package topic

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, key string
		want         bool
	}{
		{"#", "a.b.c", true},
		{"#", "a", true},
		{"stripe.customer.*", "stripe.customer.updated", true},
		{"stripe.customer.*", "stripe.customer.subscription.updated", false},
		{"stripe.customer.#", "stripe.customer.subscription.updated", true},
		{"stripe.customer.#", "stripe.customer", true},
		{"stripe.*", "github.push", false},
		{"*.push", "github.push", true},
		{"#.paid", "stripe.invoice.paid", true},
		{"#.paid", "stripe.invoice.failed", false},
		{"a.#.b.#.c", "a.x.b.y.z.c", true},
		{"a.#.b.#.c", "a.x.c", false},
		{"a", "a.b", false},
		{"a.b", "a", false},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.key); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.key, got, c.want)
		}
	}
}

// A pattern of many "#" against a long non-matching key is the case that
// makes a backtracking matcher exponential; this one must answer at once.
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

func FuzzMatch(f *testing.F) {
	f.Add("a.#.b", "a.x.b")
	f.Fuzz(func(t *testing.T, p, k string) {
		if len(p) > 200 || len(k) > 200 {
			return
		}
		_ = Match(p, k)
	})
}
