package verify

import (
	"crypto/sha256"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func stripeRequest(key string, at time.Time, body string) Request {
	t := strconv.FormatInt(at.Unix(), 10)
	return Request{
		Header: hdr("Stripe-Signature", "t="+t+",v1="+macHex(sha256.New, key, t, ".", body)),
		Body:   []byte(body), Now: at,
	}
}

// A compiled verifier accepts a secret until its expiry time and not
// after, without being compiled again; a request dated before the expiry
// (a clock read earlier) is judged by its own time.
func TestCompiledVerifierFollowsSecretExpiry(t *testing.T) {
	const old, cur = "whsec_old_secret_0000001", "whsec_new_secret_0000002"
	expiry := time.Now().Add(time.Hour).Truncate(time.Second)
	v, err := Compile(Config{Provider: "stripe", Secrets: []string{old, cur}, Tolerance: 5 * time.Minute},
		[]time.Time{expiry, {}})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"id":"evt_1","type":"invoice.paid"}`
	check := func(key string, at time.Time, wantOK bool) {
		t.Helper()
		_, err := v.Verify(stripeRequest(key, at, body))
		if wantOK && err != nil {
			t.Fatalf("%s at expiry%+v: %v, want accepted", key, at.Sub(expiry), err)
		}
		if !wantOK {
			wantErr(t, err, http.StatusUnauthorized)
		}
	}
	check(old, expiry.Add(-time.Minute), true)
	check(cur, expiry.Add(-time.Minute), true)
	check(old, expiry, true)
	check(old, expiry.Add(time.Second), false)
	check(cur, expiry.Add(time.Second), true)
	check(old, expiry.Add(-time.Second), true)

	// Every secret expired: nothing verifies.
	v, err = Compile(Config{Provider: "stripe", Secrets: []string{old}}, []time.Time{expiry})
	if err != nil {
		t.Fatal(err)
	}
	check(old, expiry.Add(time.Second), false)
}

// Compile refuses what Validate refuses, so a request never meets an
// unchecked configuration.
func TestCompileRefusesInvalidConfig(t *testing.T) {
	for _, c := range []Config{
		{Provider: "nope", Secrets: []string{"x"}},
		{Provider: "stripe"},
		{Provider: "discord", Secrets: []string{"not hex"}},
		{Provider: "hmac", Secrets: []string{"k"}, HMAC: &HMACScheme{SignatureHeader: "X-Sig", SignedContent: "{nope}"}},
	} {
		if _, err := Compile(c, nil); err == nil {
			t.Errorf("Compile(%+v) accepted", c)
		}
	}
}
