package sign_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hookyard/hookyard/platform/sign"
)

// The reference vector from the Standard Webhooks specification, shared by
// the test suites of its reference libraries.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustParse(t *testing.T, s string) []byte {
	t.Helper()
	key, err := sign.ParseSecret(s)
	if err != nil {
		t.Fatalf("ParseSecret: %v", err)
	}
	return key
}

func mustNew(t *testing.T) string {
	t.Helper()
	s, err := sign.NewSecret()
	if err != nil {
		t.Fatalf("NewSecret: %v", err)
	}
	return s
}

func TestSpecVector(t *testing.T) {
	key := mustParse(t, vectorSecret)
	got := sign.Sign([][]byte{key}, vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody))
	if got != vectorSignature {
		t.Fatalf("Sign = %q, want %q", got, vectorSignature)
	}
	// Sub-second precision is dropped, as on the wire.
	got = sign.Sign([][]byte{key}, vectorID, time.Unix(vectorTimestamp, 999_999_999), []byte(vectorBody))
	if got != vectorSignature {
		t.Fatalf("Sign with nanoseconds = %q, want %q", got, vectorSignature)
	}
}

func TestNewSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		s := mustNew(t)
		if !strings.HasPrefix(s, sign.SecretPrefix) {
			t.Fatalf("secret %q lacks prefix", s)
		}
		if key := mustParse(t, s); len(key) != sign.NewSecretBytes {
			t.Fatalf("secret decodes to %d bytes", len(key))
		}
		if seen[s] {
			t.Fatal("NewSecret repeated a secret")
		}
		seen[s] = true
	}
}

func TestParseSecret(t *testing.T) {
	enc := func(n int) string {
		return sign.SecretPrefix + base64.StdEncoding.EncodeToString(make([]byte, n))
	}
	for _, tc := range []struct {
		name    string
		in      string
		wantLen int
		wantErr string
	}{
		{"spec vector (24 bytes)", vectorSecret, 24, ""},
		{"minimum", enc(24), 24, ""},
		{"new size", enc(32), 32, ""},
		{"maximum", enc(64), 64, ""},
		{"too short", enc(23), 0, "23 bytes"},
		{"too long", enc(65), 0, "65 bytes"},
		{"empty", "", 0, "must start with"},
		{"no prefix", strings.TrimPrefix(enc(32), sign.SecretPrefix), 0, "must start with"},
		{"wrong prefix", "whsk_" + strings.TrimPrefix(enc(32), sign.SecretPrefix), 0, "must start with"},
		{"url-safe alphabet", sign.SecretPrefix + base64.URLEncoding.EncodeToString([]byte(strings.Repeat("\xfb\xff", 16))), 0, "base64"},
		{"missing padding", strings.TrimRight(enc(25), "="), 0, "base64"},
		{"whitespace", enc(32) + " ", 0, "base64"},
		{"only prefix", sign.SecretPrefix, 0, "0 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := sign.ParseSecret(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseSecret(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				if body := strings.TrimPrefix(tc.in, sign.SecretPrefix); len(body) > 8 && strings.Contains(err.Error(), body) {
					t.Fatalf("error %q reveals the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSecret(%q): %v", tc.in, err)
			}
			if len(key) != tc.wantLen {
				t.Fatalf("key length %d, want %d", len(key), tc.wantLen)
			}
		})
	}
}

func TestSignFormat(t *testing.T) {
	a, b := mustParse(t, mustNew(t)), mustParse(t, mustNew(t))
	ts := time.Unix(1_700_000_000, 0)
	if got := sign.Sign(nil, "msg_1", ts, []byte("x")); got != "" {
		t.Fatalf("Sign with no secrets = %q, want empty", got)
	}
	one := sign.Sign([][]byte{a}, "msg_1", ts, []byte("x"))
	two := sign.Sign([][]byte{a, b}, "msg_1", ts, []byte("x"))
	parts := strings.Split(two, " ")
	if len(parts) != 2 || parts[0] != one {
		t.Fatalf("rotation header %q does not start with the single-secret signature %q", two, one)
	}
	for _, p := range parts {
		version, mac, ok := strings.Cut(p, ",")
		if !ok || version != "v1" {
			t.Fatalf("signature %q is not v1,<mac>", p)
		}
		raw, err := base64.StdEncoding.DecodeString(mac)
		if err != nil || len(raw) != 32 {
			t.Fatalf("signature %q is not base64 of 32 bytes", p)
		}
	}
	// Every signed input matters.
	for name, other := range map[string]string{
		"id":   sign.Sign([][]byte{a}, "msg_2", ts, []byte("x")),
		"ts":   sign.Sign([][]byte{a}, "msg_1", ts.Add(time.Second), []byte("x")),
		"body": sign.Sign([][]byte{a}, "msg_1", ts, []byte("y")),
		"key":  sign.Sign([][]byte{b}, "msg_1", ts, []byte("x")),
	} {
		if other == one {
			t.Errorf("changing %s did not change the signature", name)
		}
	}
}

func TestHeaders(t *testing.T) {
	key := mustParse(t, vectorSecret)
	h := http.Header{}
	h.Set(sign.HeaderSignature, "v1,stale")
	sign.Headers(h, [][]byte{key}, vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody))
	if got := h.Get("webhook-id"); got != vectorID {
		t.Errorf("webhook-id = %q", got)
	}
	if got := h.Get("webhook-timestamp"); got != strconv.Itoa(vectorTimestamp) {
		t.Errorf("webhook-timestamp = %q", got)
	}
	if got := h.Values("webhook-signature"); len(got) != 1 || got[0] != vectorSignature {
		t.Errorf("webhook-signature = %q", got)
	}
}

// TestPublicLibraryVerifies proves subscribers can verify deliveries with the
// specification's Go library, including while a secret is being rotated:
// the delivery carries both signatures and a subscriber holding either the
// old or the new secret accepts it.
func TestPublicLibraryVerifies(t *testing.T) {
	oldSecret, newSecret, stranger := mustNew(t), mustNew(t), mustNew(t)
	oldKey, newKey := mustParse(t, oldSecret), mustParse(t, newSecret)
	body := []byte(`{"type":"invoice.paid","data":{"id":"in_1","amount":4200}}`)
	now := time.Now()

	verifier := func(secret string) *standardwebhooks.Webhook {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatalf("NewWebhook: %v", err)
		}
		return wh
	}

	for _, tc := range []struct {
		name     string
		signWith [][]byte
		verifyAs string
		ok       bool
	}{
		{"single secret", [][]byte{oldKey}, oldSecret, true},
		{"rotation, old holder", [][]byte{oldKey, newKey}, oldSecret, true},
		{"rotation, new holder", [][]byte{oldKey, newKey}, newSecret, true},
		{"rotation, new first", [][]byte{newKey, oldKey}, oldSecret, true},
		{"after rotation, old holder", [][]byte{newKey}, oldSecret, false},
		{"unrelated secret", [][]byte{oldKey, newKey}, stranger, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			sign.Headers(h, tc.signWith, "msg_2Lq0Yyf3FQ", now, body)
			err := verifier(tc.verifyAs).Verify(body, h)
			if tc.ok && err != nil {
				t.Fatalf("public library rejected the delivery: %v", err)
			}
			if !tc.ok && !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
				t.Fatalf("public library error = %v, want ErrNoMatchingSignature", err)
			}
		})
	}

	t.Run("tampered body", func(t *testing.T) {
		h := http.Header{}
		sign.Headers(h, [][]byte{oldKey}, "msg_x", now, body)
		if err := verifier(oldSecret).Verify(append(body, ' '), h); err == nil {
			t.Fatal("public library accepted a modified body")
		}
	})

	t.Run("library signs the same", func(t *testing.T) {
		want, err := verifier(oldSecret).Sign("msg_x", now, body)
		if err != nil {
			t.Fatal(err)
		}
		if got := sign.Sign([][]byte{oldKey}, "msg_x", now, body); got != want {
			t.Fatalf("Sign = %q, library = %q", got, want)
		}
	})
}

// A prepared key signs like a fresh one, also when many deliveries share
// it at once (each signature starts from its own copy of the keyed state).
func TestKeySharedBySignatures(t *testing.T) {
	old, cur := mustParse(t, mustNew(t)), mustParse(t, mustNew(t))
	keys := []*sign.Key{sign.NewKey(cur), sign.NewKey(old)}
	if got := sign.SignWith([]*sign.Key{sign.NewKey(mustParse(t, vectorSecret))}, vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody)); got != vectorSignature {
		t.Fatalf("SignWith = %q, want %q", got, vectorSignature)
	}
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			id, body := "msg_"+strconv.Itoa(i), []byte(strings.Repeat("x", i*37))
			ts := time.Unix(1700000000+int64(i), 0)
			for range 20 {
				if got, want := sign.SignWith(keys, id, ts, body), sign.Sign([][]byte{cur, old}, id, ts, body); got != want {
					t.Errorf("SignWith = %q, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkSign: a signature from the secret's bytes (the key schedule
// derived each time) and from a prepared key.
func BenchmarkSign(b *testing.B) {
	secret, err := sign.ParseSecret(vectorSecret)
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"id":"in_1","amount":4200,"currency":"eur"}`)
	ts := time.Unix(vectorTimestamp, 0)
	b.Run("secret", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sign.Sign([][]byte{secret}, vectorID, ts, body)
		}
	})
	b.Run("key", func(b *testing.B) {
		keys := []*sign.Key{sign.NewKey(secret)}
		b.ReportAllocs()
		for b.Loop() {
			sign.SignWith(keys, vectorID, ts, body)
		}
	})
}
