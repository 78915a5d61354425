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

// A source named after a provider takes that provider's place on the bus
// (routing keys "stripe.*", which consumers bind to as the README
// suggests). Under another provider, "hmac" say, its owner signs whatever
// it likes with its own key and it reaches them as Stripe's events: such
// a source must be of the provider it is named after.
func TestProviderNamesTakeTheirProvider(t *testing.T) {
	hmac := &ingressv1.HmacScheme{SignatureHeader: "X-Sig"}
	for _, src := range []*ingressv1.Source{
		{Name: "stripe", Provider: "hmac", Secrets: []string{"whsec_abcdefghijklmnop1234"}, Hmac: hmac},
		{Name: "github", Provider: "stripe", Secrets: []string{"whsec_abcdefghijklmnop1234"}},
		{Name: "shopify", Provider: "github", Secrets: []string{"whsec_abcdefghijklmnop1234"}},
	} {
		if err := Validate(src); err == nil || !strings.Contains(err.Error(), "provider") {
			t.Errorf("source %q of provider %s: %v, want refused", src.GetName(), src.GetProvider(), err)
		}
	}
	if err := Validate(&ingressv1.Source{Name: "hmac", Provider: "hmac", Secrets: []string{"k"}, Hmac: hmac}); err != nil {
		t.Errorf("source hmac of provider hmac: %v", err)
	}
}
