package source

import (
	"strings"
	"testing"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
)

// "app" is every tenant's default source for internal events and
// "hookyard" is Hookyard's own: a webhook source taking either would let
// one tenant refuse everyone's internal events or pose as Hookyard.
func TestReservedNamesAreRefused(t *testing.T) {
	for _, name := range []string{"app", "hookyard"} {
		err := Validate(&ingressv1.Source{Name: name, Provider: "stripe", Secrets: []string{"whsec_abcdefghijklmnop1234"}})
		if err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("source named %q: %v, want refused as reserved", name, err)
		}
	}
	if err := Validate(&ingressv1.Source{Name: "stripe", Provider: "stripe", Secrets: []string{"whsec_abcdefghijklmnop1234"}}); err != nil {
		t.Fatalf("a provider's name is a fine source name: %v", err)
	}
}
