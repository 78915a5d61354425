// Package sign produces Standard Webhooks signatures
// (https://www.standardwebhooks.com) for outbound deliveries, so that
// subscribers can verify them with any of the specification's public
// libraries.
//
// The signed content is "<webhook-id>.<unix seconds>.<body>", the MAC is
// HMAC-SHA256 keyed with the endpoint secret, and the header carries
// "v1,<base64 MAC>". During a secret rotation a delivery is signed with
// every active secret, space-separated, so a subscriber holding either the
// old or the new secret accepts it.
package sign

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names from the specification.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix marks a Standard Webhooks symmetric secret.
const SecretPrefix = "whsec_"

// Secret sizes. The specification asks for 24 to 64 bytes; new secrets use
// 32 bytes, the output size of SHA-256, so the key is as strong as the MAC.
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
	NewSecretBytes = 32
)

// signatureVersion is the scheme identifier for HMAC-SHA256 signatures.
const signatureVersion = "v1"

// NewSecret returns a fresh secret, "whsec_" followed by the standard
// base64 encoding of 32 random bytes.
func NewSecret() (string, error) {
	key := make([]byte, NewSecretBytes)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generate webhook secret: %w", err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// ParseSecret decodes a "whsec_<base64>" secret into its key bytes. The
// prefix is required so that a secret of another kind pasted by mistake is
// caught here rather than producing signatures nobody can verify. Errors
// never include the secret itself, since they may end up in logs.
func ParseSecret(s string) ([]byte, error) {
	encoded, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("webhook secret must start with %q", SecretPrefix)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(encoded)
	if err != nil {
		return nil, errors.New("webhook secret is not valid standard base64 after the prefix")
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return nil, fmt.Errorf("webhook secret is %d bytes, must be %d to %d bytes", len(key), MinSecretBytes, MaxSecretBytes)
	}
	return key, nil
}

// Key is a secret prepared for signing many deliveries: the HMAC key
// schedule (the hashed inner and outer pads) is computed once, and each
// signature starts from a copy of it instead of deriving it again. A Key
// is safe for concurrent use.
type Key struct {
	secret []byte
	keyed  hash.Hash // HMAC-SHA256 with the pads absorbed; only cloned
}

// NewKey prepares secret (the decoded key bytes) for signing.
func NewKey(secret []byte) *Key {
	mac := hmac.New(sha256.New, secret)
	// Reset keeps the hashed pads, so every Sum of a copy restores the
	// outer state instead of hashing the outer pad again.
	mac.Reset()
	return &Key{secret: secret, keyed: mac}
}

// mac returns a fresh HMAC of k, from a copy of its keyed state.
func (k *Key) mac() hash.Hash {
	if c, ok := k.keyed.(hash.Cloner); ok {
		if m, err := c.Clone(); err == nil {
			return m.(hash.Hash)
		}
	}
	return hmac.New(sha256.New, k.secret)
}

// Sign returns the webhook-signature header value for a delivery: one
// "v1,<base64 HMAC-SHA256>" per secret, in the order given, separated by
// single spaces. The timestamp is truncated to whole seconds, as on the
// wire. With no secrets it returns "", which no verifier accepts.
func Sign(secrets [][]byte, id string, ts time.Time, body []byte) string {
	return signAll(len(secrets), func(i int) hash.Hash { return hmac.New(sha256.New, secrets[i]) }, id, ts, body)
}

// SignWith is Sign with prepared keys.
func SignWith(keys []*Key, id string, ts time.Time, body []byte) string {
	return signAll(len(keys), func(i int) hash.Hash { return keys[i].mac() }, id, ts, body)
}

// signAll signs with the n MACs that mac returns.
func signAll(n int, mac func(int) hash.Hash, id string, ts time.Time, body []byte) string {
	var prefix [96]byte // "<id>.<unix>.", on the stack for ordinary ids
	signed := strconv.AppendInt(append(append(prefix[:0], id...), '.'), ts.Unix(), 10)
	signed = append(signed, '.')
	const sigLen = len(signatureVersion) + 1 + 44 // "v1," and base64 of 32 bytes
	out := make([]byte, 0, n*(sigLen+1))
	var sum [sha256.Size]byte
	for i := range n {
		if i > 0 {
			out = append(out, ' ')
		}
		m := mac(i)
		m.Write(signed)
		m.Write(body)
		out = append(out, signatureVersion...)
		out = append(out, ',')
		out = base64.StdEncoding.AppendEncode(out, m.Sum(sum[:0]))
	}
	return string(out)
}

// Headers sets webhook-id, webhook-timestamp and webhook-signature on h for
// a delivery of body, replacing any earlier values. Using one function for
// both the timestamp header and the signature guarantees the two agree.
func Headers(h http.Header, secrets [][]byte, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Sign(secrets, id, ts, body))
}

// HeadersWith is Headers with prepared keys.
func HeadersWith(h http.Header, keys []*Key, id string, ts time.Time, body []byte) {
	h.Set(canonicalID, id)
	h.Set(canonicalTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(canonicalSignature, SignWith(keys, id, ts, body))
}

// The header names as http.Header keeps them, so that setting them does
// not canonicalize (allocate) them again for every delivery.
var (
	canonicalID        = http.CanonicalHeaderKey(HeaderID)
	canonicalTimestamp = http.CanonicalHeaderKey(HeaderTimestamp)
	canonicalSignature = http.CanonicalHeaderKey(HeaderSignature)
)
