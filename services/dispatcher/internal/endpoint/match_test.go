package endpoint

import "testing"

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
