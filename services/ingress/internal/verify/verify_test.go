package verify

import (
	"bytes"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// wantErr asserts that err is an *Error with the given status.
func wantErr(t *testing.T, err error, status int) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *Error with status %d", err, err, status)
	}
	if e.Status != status {
		t.Fatalf("status = %d (%q), want %d", e.Status, e.Reason, status)
	}
	if e.Reason == "" {
		t.Fatalf("empty reason")
	}
	return e
}

func TestProviders(t *testing.T) {
	want := []string{"discord", "github", "hmac", "intercom", "linear", "mailgun", "paddle", "pagerduty",
		"sendgrid", "shopify", "slack", "square", "standard", "stripe", "twilio", "zoom"}
	if got := Providers(); !slices.Equal(got, want) {
		t.Fatalf("Providers() = %v, want %v", got, want)
	}
	covered := map[string]bool{}
	for _, f := range fixtures(t) {
		covered[f.cfg.Provider] = true
	}
	for _, p := range want {
		if !covered[p] {
			t.Errorf("no example for provider %s", p)
		}
	}
}

func TestExamplesAccepted(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			if err := f.cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			ev, err := Verify(f.cfg, clone(f.req))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if ev.ID != f.wantID || ev.Type != f.wantType {
				t.Fatalf("event = %+v, want ID %q type %q", ev, f.wantID, f.wantType)
			}
		})
	}
}

func TestBodyByteChangedRefused(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			r := clone(f.req)
			r.Body[f.flip] ^= 0x01
			_, err := Verify(f.cfg, r)
			e := wantErr(t, err, http.StatusUnauthorized)
			if e.Reason != "signature mismatch" {
				t.Fatalf("reason = %q", e.Reason)
			}
		})
	}
}

func TestSecretChangedRefused(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			c := f.cfg
			c.Secrets = []string{f.wrong}
			_, err := Verify(c, clone(f.req))
			wantErr(t, err, http.StatusUnauthorized)
		})
	}
}

func TestRotation(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			c := f.cfg
			c.Secrets = []string{f.wrong, f.cfg.Secrets[0]}
			ev, err := Verify(c, clone(f.req))
			if err != nil {
				t.Fatalf("Verify with the right secret second: %v", err)
			}
			if ev.ID != f.wantID {
				t.Fatalf("ID = %q, want %q", ev.ID, f.wantID)
			}
		})
	}
}

func TestTimestampWindow(t *testing.T) {
	const tol = 5 * time.Minute
	for _, f := range fixtures(t) {
		if f.signedAt.IsZero() {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			c := f.cfg
			c.Tolerance = tol
			for _, tc := range []struct {
				name string
				now  time.Time
				ok   bool
			}{
				{"at", f.signedAt, true},
				{"late within", f.signedAt.Add(tol - time.Second), true},
				{"early within", f.signedAt.Add(-tol + time.Second), true},
				{"too late", f.signedAt.Add(tol + time.Second), false},
				{"too early", f.signedAt.Add(-tol - time.Second), false},
			} {
				r := clone(f.req)
				r.Now = tc.now
				_, err := Verify(c, r)
				if tc.ok {
					if err != nil {
						t.Errorf("%s: %v", tc.name, err)
					}
					continue
				}
				if e := wantErr(t, err, http.StatusUnauthorized); e.Reason != "timestamp outside tolerance" {
					t.Errorf("%s: reason %q", tc.name, e.Reason)
				}
			}
			// Tolerance 0 turns the check off.
			c.Tolerance = 0
			r := clone(f.req)
			r.Now = f.signedAt.Add(1000 * time.Hour)
			if _, err := Verify(c, r); err != nil {
				t.Errorf("tolerance 0: %v", err)
			}
		})
	}
}

func TestMissingHeaders(t *testing.T) {
	for _, f := range fixtures(t) {
		for _, name := range f.required {
			t.Run(f.name+"/"+name, func(t *testing.T) {
				r := clone(f.req)
				r.Header.Del(name)
				_, err := Verify(f.cfg, r)
				e := wantErr(t, err, http.StatusUnauthorized)
				if !strings.Contains(strings.ToLower(e.Reason), strings.ToLower(name)) {
					t.Fatalf("reason %q does not name %s", e.Reason, name)
				}
			})
		}
	}
	// Mailgun's signature is in the body.
	_, err := Verify(Config{Provider: "mailgun", Secrets: []string{"k"}},
		Request{Header: hdr("Content-Type", "application/json"), Body: []byte(`{"event-data":{"id":"x"}}`)})
	wantErr(t, err, http.StatusUnauthorized)
	// No headers at all, nil header map included.
	for _, f := range fixtures(t) {
		if f.name == "mailgun" {
			continue
		}
		_, err := Verify(f.cfg, Request{Body: f.req.Body})
		if err == nil {
			t.Errorf("%s: accepted without headers", f.name)
		}
	}
}

func TestOversizedAndMalformedHeaders(t *testing.T) {
	long := strings.Repeat("a", maxHeaderLen+1)
	for _, f := range fixtures(t) {
		for _, name := range f.required {
			t.Run(f.name+"/"+name, func(t *testing.T) {
				r := clone(f.req)
				r.Header.Set(name, long)
				_, err := Verify(f.cfg, r)
				wantErr(t, err, http.StatusBadRequest)
			})
		}
	}
	cases := []struct {
		provider, header, value string
	}{
		{"stripe", "Stripe-Signature", "v1=abcd"},
		{"stripe", "Stripe-Signature", "t=1,t=2,v1=ab"},
		{"stripe", "Stripe-Signature", "t=12x,v1=ab"},
		{"stripe", "Stripe-Signature", "t=1" + strings.Repeat(",v1=ab", maxSignatures+1)},
		{"paddle", "Paddle-Signature", "h1=ab"},
		{"paddle", "Paddle-Signature", "ts=-5;h1=ab"},
		{"pagerduty", "X-PagerDuty-Signature", strings.Repeat("v1=ab,", maxSignatures+1)},
		{"github", "X-Hub-Signature-256", "sha1=abcd"},
		{"github", "X-Hub-Signature-256", "sha256=zz"},
		{"intercom", "X-Hub-Signature", "abcd"},
		{"shopify", "X-Shopify-Hmac-Sha256", "!!!"},
		{"square", "X-Square-Hmacsha256-Signature", "%%%"},
		{"twilio", "X-Twilio-Signature", "not base64!"},
		{"slack", "X-Slack-Signature", "v1=abcd"},
		{"slack", "X-Slack-Request-Timestamp", "1e9"},
		{"zoom", "x-zm-signature", "abcd"},
		{"linear", "Linear-Signature", "xyz"},
		{"discord", "X-Signature-Ed25519", "abcd"},
		{"discord", "X-Signature-Timestamp", " 1700000100"},
		{"sendgrid", "X-Twilio-Email-Event-Webhook-Signature", "$$"},
		{"standard", "Webhook-Signature", strings.Repeat("v1,AAAA ", maxSignatures+1)},
		{"standard", "Webhook-Timestamp", "soon"},
		{"hmac", "X-Acme-Signature", "sha256=abc"},
	}
	byName := map[string]fixture{}
	for _, f := range fixtures(t) {
		byName[f.name] = f
	}
	for _, tc := range cases {
		t.Run(tc.provider+"/"+tc.value[:min(len(tc.value), 20)], func(t *testing.T) {
			f := byName[tc.provider]
			r := clone(f.req)
			r.Header.Set(tc.header, tc.value)
			_, err := Verify(f.cfg, r)
			wantErr(t, err, http.StatusBadRequest)
		})
	}
}

func TestNoUsableSignatureIs401(t *testing.T) {
	byName := map[string]fixture{}
	for _, f := range fixtures(t) {
		byName[f.name] = f
	}
	for _, tc := range []struct{ provider, header, value string }{
		{"stripe", "Stripe-Signature", "t=1700000000,v0=abcd,v2=abcd"},
		{"paddle", "Paddle-Signature", "ts=1671552777;h2=abcd"},
		{"pagerduty", "X-PagerDuty-Signature", "v2=abcd"},
		{"standard", "Webhook-Signature", "v2,AAAA"},
	} {
		f := byName[tc.provider]
		r := clone(f.req)
		r.Header.Set(tc.header, tc.value)
		_, err := Verify(f.cfg, r)
		wantErr(t, err, http.StatusUnauthorized)
	}
}

func TestValidate(t *testing.T) {
	good := fixtures(t)
	for _, f := range good {
		if err := f.cfg.Validate(); err != nil {
			t.Errorf("%s: %v", f.name, err)
		}
	}
	scheme := func(mod func(*HMACScheme)) *HMACScheme {
		s := &HMACScheme{SignatureHeader: "X-Sig"}
		mod(s)
		return s
	}
	bad := []struct {
		name string
		c    Config
		want string
	}{
		{"unknown provider", Config{Provider: "acme", Secrets: []string{"s"}}, "unknown provider"},
		{"no secrets", Config{Provider: "stripe"}, "at least one secret"},
		{"empty secret", Config{Provider: "stripe", Secrets: []string{"a", ""}}, "empty"},
		{"too many secrets", Config{Provider: "stripe", Secrets: slices.Repeat([]string{"s"}, maxSecrets+1)}, "at most"},
		{"negative tolerance", Config{Provider: "stripe", Secrets: []string{"s"}, Tolerance: -time.Second}, "tolerance"},
		{"twilio without url", Config{Provider: "twilio", Secrets: []string{"s"}}, "public URL"},
		{"twilio relative url", Config{Provider: "twilio", Secrets: []string{"s"}, PublicURL: "/hook"}, "absolute"},
		{"twilio bodySHA256", Config{Provider: "twilio", Secrets: []string{"s"}, PublicURL: "https://x.test/h?bodySHA256=ab"}, "bodySHA256"},
		{"square ftp url", Config{Provider: "square", Secrets: []string{"s"}, PublicURL: "ftp://x.test/h"}, "http"},
		{"standard bad base64", Config{Provider: "standard", Secrets: []string{"whsec_!!!"}}, "whsec_"},
		{"standard short whpk", Config{Provider: "standard", Secrets: []string{"whpk_AAAA"}}, "Ed25519"},
		{"sendgrid not base64", Config{Provider: "sendgrid", Secrets: []string{"%%%"}}, "base64"},
		{"sendgrid not a key", Config{Provider: "sendgrid", Secrets: []string{"AAAA"}}, "public key"},
		{"discord short key", Config{Provider: "discord", Secrets: []string{"abcd"}}, "Ed25519"},
		{"hmac without scheme", Config{Provider: "hmac", Secrets: []string{"s"}}, "scheme is required"},
		{"scheme on other provider", Config{Provider: "github", Secrets: []string{"s"}, HMAC: &HMACScheme{SignatureHeader: "X"}}, "only used"},
		{"hmac no header", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: &HMACScheme{}}, "signature header"},
		{"hmac bad header name", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.SignatureHeader = "X Sig" })}, "header name"},
		{"hmac md5", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.Algorithm = "md5" })}, "algorithm"},
		{"hmac base32", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.Encoding = "base32" })}, "encoding"},
		{"hmac no body", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.SignedContent = "{timestamp}" })}, "{body}"},
		{"hmac two bodies", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.SignedContent = "{body}{body}" })}, "{body}"},
		{"hmac unknown placeholder", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.SignedContent = "{url}{body}" })}, "unknown placeholder"},
		{"hmac unclosed", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.SignedContent = "{body}{id" })}, "unclosed"},
		{"hmac timestamp unsigned", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.TimestampHeader = "X-Ts" })}, "timestamp header"},
		{"hmac timestamp no header", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.SignedContent = "{timestamp}.{body}" })}, "timestamp header"},
		{"hmac id no header", Config{Provider: "hmac", Secrets: []string{"s"}, HMAC: scheme(func(s *HMACScheme) { s.SignedContent = "{id}.{body}" })}, "id header"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
			// Verify must refuse such a config without panicking.
			_, verr := Verify(tc.c, Request{Header: hdr("X-Sig", "ab"), Body: []byte("{}")})
			wantErr(t, verr, http.StatusInternalServerError)
		})
	}
}

func TestErrorIsNilInterfaceOnSuccess(t *testing.T) {
	f := fixtures(t)[0]
	_, err := Verify(f.cfg, clone(f.req))
	if err != nil {
		t.Fatalf("err = %#v", err)
	}
}

func TestVerifyDoesNotModifyBody(t *testing.T) {
	for _, f := range fixtures(t) {
		r := clone(f.req)
		before := bytes.Clone(r.Body)
		Verify(f.cfg, r)
		if !bytes.Equal(before, r.Body) {
			t.Errorf("%s: body changed", f.name)
		}
	}
}

func TestLongEventIDRefused(t *testing.T) {
	f := fixtures(t)[1] // github: the id is a header
	r := clone(f.req)
	r.Header.Set("X-GitHub-Delivery", strings.Repeat("x", maxIDLen+1))
	_, err := Verify(f.cfg, r)
	wantErr(t, err, http.StatusBadRequest)
}

func TestZeroNowMeansNow(t *testing.T) {
	for _, f := range fixtures(t) {
		if f.signedAt.IsZero() {
			continue
		}
		c := f.cfg
		c.Tolerance = time.Minute
		r := clone(f.req)
		r.Now = time.Time{}
		// The examples are years old: with the real clock they are stale.
		_, err := Verify(c, r)
		wantErr(t, err, http.StatusUnauthorized)
	}
}
