package topic

import (
	"strings"
	"testing"
	"time"
)

// worstKey is 123 bytes of one-letter words that the worst pattern below
// almost matches: every "#" has many places to start, and the last word
// never fits.
var worstKey = strings.TrimSuffix(strings.Repeat("a.", 62), ".")

const worstPattern = "#.a.#.a.#.a.#.a.#.a.#.a.#.a.#.a.zz"

// A backtracking matcher takes tens of seconds on this pair, holding a
// fan-out slot the whole time. The deadline is generous: the matcher must
// be polynomial, not fast on a quiet machine.
func TestMatchIsPolynomial(t *testing.T) {
	if len(worstKey) != 123 {
		t.Fatalf("key is %d bytes", len(worstKey))
	}
	done := make(chan bool, 1)
	go func() { done <- Match(worstPattern, worstKey) }()
	select {
	case got := <-done:
		if got {
			t.Fatal("pattern ending in zz matched a key without zz")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("matching the worst pattern did not finish in 2s")
	}
	if !Match(worstPattern, worstKey+".zz") {
		t.Fatal("pattern did not match the key ending in zz")
	}
}

// slowMatch is the obvious backtracking matcher, the reference for the
// fuzz target on inputs small enough for it.
func slowMatch(p, k []string) bool {
	if len(p) == 0 {
		return len(k) == 0
	}
	switch p[0] {
	case "#":
		for i := 0; i <= len(k); i++ {
			if slowMatch(p[1:], k[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(k) > 0 && slowMatch(p[1:], k[1:])
	}
	return len(k) > 0 && k[0] == p[0] && slowMatch(p[1:], k[1:])
}

func FuzzMatch(f *testing.F) {
	f.Add("a.#.z", "a.b.c.z")
	f.Add("#.#.paid", "x.paid")
	f.Add("*.b.#", "a.b")
	f.Add("#", "")
	f.Add("#.a.#.a.zz", "a.a.a.a")
	f.Fuzz(func(t *testing.T, pattern, key string) {
		p, k := strings.Split(pattern, "."), strings.Split(key, ".")
		if len(p) > 10 || len(k) > 16 {
			return
		}
		if got, want := Match(pattern, key), slowMatch(p, k); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", pattern, key, got, want)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	b.Run("worst", func(b *testing.B) {
		for b.Loop() {
			Match(worstPattern, worstKey)
		}
	})
	b.Run("typical", func(b *testing.B) {
		for b.Loop() {
			Match("stripe.invoice.*", "stripe.invoice.paid")
		}
	})
}
