package source

import (
	"regexp"
	"testing"
)

// ValidName is the rule the API documents, written as a loop.
func FuzzValidName(f *testing.F) {
	rule := regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	for _, s := range []string{"", "a", "stripe", "-a", "_a", "A", "a.b", "a\n", "0123456789012345678901234567890123456789012345678901234567890123", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := ValidName(name), rule.MatchString(name); got != want {
			t.Fatalf("ValidName(%q) = %v, want %v", name, got, want)
		}
	})
}
