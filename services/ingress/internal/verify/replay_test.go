package verify

import (
	"slices"
	"testing"
)

// For providers whose event id (and type) travel in unsigned headers, a
// captured request replayed under another id must still be recognisable:
// its Nonce names the signed content, so it is the same for the replay and
// the receiver refuses it as a signature used for another event.
func TestUnsignedIDProvidersNameTheSignedContent(t *testing.T) {
	idHeader := map[string]string{
		"github":  "X-GitHub-Delivery",
		"shopify": "X-Shopify-Webhook-Id",
		"linear":  "Linear-Delivery",
		"twilio":  "I-Twilio-Idempotency-Token",
	}
	typeHeader := map[string]string{"github": "X-GitHub-Event", "shopify": "X-Shopify-Topic", "linear": "Linear-Event"}
	seen := map[string]bool{}
	for _, f := range fixtures(t) {
		h, ok := idHeader[f.name]
		if !ok {
			continue
		}
		seen[f.name] = true
		orig, err := Verify(f.cfg, f.req)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if orig.Nonce == "" {
			t.Errorf("%s: no nonce: a replay under a new %s could not be told apart", f.name, h)
			continue
		}
		replay := clone(f.req)
		replay.Header.Set(h, "00000000-0000-4000-8000-000000000000")
		if th, ok := typeHeader[f.name]; ok {
			replay.Header.Set(th, "forged_type")
		}
		got, err := Verify(f.cfg, replay)
		if err != nil {
			t.Fatalf("%s replay: %v", f.name, err)
		}
		if got.ID == orig.ID {
			t.Fatalf("%s: the id did not change with %s", f.name, h)
		}
		if got.Nonce != orig.Nonce {
			t.Errorf("%s: the replay's nonce %q differs from the original's %q", f.name, got.Nonce, orig.Nonce)
		}
	}
	for name := range idHeader {
		if !seen[name] {
			t.Errorf("no fixture for %s", name)
		}
	}
}

// Twilio signs its form parameters sorted, so reordering them in a replay
// keeps the signature valid: the nonce must not depend on the order.
func TestTwilioReorderedReplayKeepsItsNonce(t *testing.T) {
	i := slices.IndexFunc(fixtures(t), func(f fixture) bool { return f.name == "twilio" })
	f := fixtures(t)[i]
	orig, err := Verify(f.cfg, f.req)
	if err != nil {
		t.Fatal(err)
	}
	replay := clone(f.req)
	replay.Body = []byte("To=%2B18005551212&From=%2B14158675309&Digits=1234&Caller=%2B14158675309&CallSid=CA1234567890ABCDE")
	replay.Header.Set("I-Twilio-Idempotency-Token", "another-token")
	got, err := Verify(f.cfg, replay)
	if err != nil {
		t.Fatalf("reordered replay: %v", err)
	}
	if orig.Nonce == "" || got.Nonce != orig.Nonce {
		t.Errorf("nonces %q and %q, want one non-empty value", orig.Nonce, got.Nonce)
	}
}
