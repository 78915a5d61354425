package verify

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

// Standard Webhooks (https://www.standardwebhooks.com/), also what Svix
// sends. The signed content is "<id>.<timestamp>.<body>", taken from the
// headers
//
//	webhook-id: msg_2KWPBgLlAfxdpx2AI54pPJ85f4W
//	webhook-timestamp: 1674087231
//	webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1a,...
//
// or their svix-id, svix-timestamp and svix-signature equivalents. The
// signature header holds space-separated "<version>,<base64>" entries:
// one per active secret during a rotation, and versions we do not know are
// ignored, as the specification asks.
//
//   - v1 is HMAC-SHA256; the secret is "whsec_" followed by the base64 of
//     the key bytes (the prefix is optional here, the base64 is not).
//   - v1a is Ed25519; the configured key is "whpk_" followed by the base64
//     of the 32-byte public key.
//
// The id is webhook-id and the type the body's "type", when it is JSON and
// has one.

// standardKeys are the decoded secrets of a Config.
type standardKeys struct {
	hmac [][]byte
	ed   []ed25519.PublicKey
}

func parseStandardKeys(secrets []string) (standardKeys, error) {
	var k standardKeys
	for i, s := range secrets {
		if pk, ok := strings.CutPrefix(s, "whpk_"); ok {
			b, err := base64.StdEncoding.DecodeString(pk)
			if err != nil || len(b) != ed25519.PublicKeySize {
				return k, fmt.Errorf("secret %d: whpk_ key must be the base64 of a %d-byte Ed25519 public key", i, ed25519.PublicKeySize)
			}
			k.ed = append(k.ed, ed25519.PublicKey(b))
			continue
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil || len(b) == 0 {
			return k, fmt.Errorf("secret %d: want whsec_<base64> or whpk_<base64>", i)
		}
		k.hmac = append(k.hmac, b)
	}
	return k, nil
}

func validateStandard(c Config) error {
	_, err := parseStandardKeys(c.Secrets)
	return err
}

// parseStandardSignatures splits a webhook-signature header into v1 (HMAC)
// and v1a (Ed25519) signatures.
func parseStandardSignatures(name, v string) (v1, v1a [][]byte, err *Error) {
	if len(v) > maxHeaderLen {
		return nil, nil, errMalformed(name + " header: too long")
	}
	n := 0
	for entry := range strings.FieldsSeq(v) {
		n++
		if n > maxSignatures {
			return nil, nil, errTooMany(name)
		}
		version, b64, ok := strings.Cut(entry, ",")
		if !ok {
			continue
		}
		sig, ok := decodeBase64(b64)
		if !ok {
			continue
		}
		switch version {
		case "v1":
			v1 = append(v1, sig)
		case "v1a":
			v1a = append(v1a, sig)
		}
	}
	return v1, v1a, nil
}

func verifyStandard(c *compiled, r Request) (Event, *Error) {
	prefix := "Webhook-"
	if r.Header.Get("Webhook-Signature") == "" && r.Header.Get("Svix-Signature") != "" {
		prefix = "Svix-"
	}
	sigHeader, idHeader, tsHeader := prefix+"Signature", prefix+"Id", prefix+"Timestamp"
	h, err := header(r, sigHeader)
	if err != nil {
		return Event{}, err
	}
	id, err := header(r, idHeader)
	if err != nil {
		return Event{}, err
	}
	ts, err := header(r, tsHeader)
	if err != nil {
		return Event{}, err
	}
	t, err := parseUnix(ts, tsHeader+" header")
	if err != nil {
		return Event{}, err
	}
	v1, v1a, err := parseStandardSignatures(sigHeader, h)
	if err != nil {
		return Event{}, err
	}
	if len(v1) == 0 && len(v1a) == 0 {
		return Event{}, &Error{Status: 401, Reason: "no supported signature in " + sigHeader + " header"}
	}
	if err := checkTime(c, r, t); err != nil {
		return Event{}, err
	}
	content := make([]byte, 0, len(id)+len(ts)+2+len(r.Body))
	content = append(content, id...)
	content = append(content, '.')
	content = append(content, ts...)
	content = append(content, '.')
	content = append(content, r.Body...)
	if !standardMatch(c.std, v1, v1a, content) {
		return Event{}, errMismatch()
	}
	// A body that is not JSON has no type; jsonFields leaves it empty.
	var typ [1]string
	if looksLikeJSON(r.Body) {
		_ = jsonFields(r.Body, typeField, typ[:])
	}
	return event(id, typ[0], r.Body)
}

var typeField = []string{"type"}

func standardMatch(keys standardKeys, v1, v1a [][]byte, content []byte) bool {
	if len(v1) > 0 {
		if _, ok := matchHMAC(keys.hmac, sha256.New, v1, content); ok {
			return true
		}
	}
	for _, pub := range keys.ed {
		for _, sig := range v1a {
			if len(sig) == ed25519.SignatureSize && ed25519.Verify(pub, content, sig) {
				return true
			}
		}
	}
	return false
}
