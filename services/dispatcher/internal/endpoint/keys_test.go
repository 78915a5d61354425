package endpoint

import (
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/sign"
)

// SigningKeys prepares a record's keys once, and still follows its secrets:
// a secret added by a rotation, one that expires, one that does not parse.
func TestSigningKeysFollowSecrets(t *testing.T) {
	newSecret := func() (string, []byte) {
		s, err := sign.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		k, err := sign.ParseSecret(s)
		if err != nil {
			t.Fatal(err)
		}
		return s, k
	}
	s1, k1 := newSecret()
	s2, k2 := newSecret()
	now := time.Now()
	body := []byte(`{"a":1}`)
	check := func(r *Record, at time.Time, want ...[]byte) {
		t.Helper()
		for range 2 { // prepared, then from what was prepared
			if got, w := sign.SignWith(r.SigningKeys(at), "msg_1", at, body), sign.Sign(want, "msg_1", at, body); got != w {
				t.Fatalf("signature %q, want %q", got, w)
			}
		}
	}
	r := &Record{Secrets: []Secret{{Value: s1}}}
	check(r, now, k1)
	first := r.SigningKeys(now)
	if again := r.SigningKeys(now); &again[0] != &first[0] {
		t.Error("the keys of unchanged secrets were prepared again")
	}
	r.Secrets = []Secret{{Value: s2}, {Value: s1, Expires: now.Add(time.Hour)}}
	check(r, now, k2, k1)
	check(r, now.Add(2*time.Hour), k2)
	r.Secrets = []Secret{{Value: "whsec_not base64"}, {Value: s1}}
	check(r, now, k1)
}
