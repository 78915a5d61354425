// Package verify authenticates third-party webhook requests and names the
// event they carry.
//
// Every provider signs its webhooks differently: some sign the body alone,
// some a timestamp and the body, some the URL they called, some sign with a
// public-key scheme. Verify checks the signature over the exact bytes it is
// given (JSON is never re-serialised: a re-encoded body would not be what
// the provider signed) and only then trusts the body enough to read the
// event id and type from it.
//
// All signature comparisons are constant time, every header that is parsed
// is capped in length and in the number of signatures it may carry, and
// every bad input yields an *Error with a 400 or 401 status and a short
// reason that is safe to show to the caller. Nothing in here panics on
// input.
package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits on what is parsed out of a request. Providers send one signature,
// or a handful while a secret is being rotated; anything much larger is an
// attack or a bug and is refused before any work is done on it.
const (
	maxHeaderLen  = 8 << 10 // longest header value that is parsed
	maxSignatures = 16      // most signatures accepted in one header
	maxSecrets    = 16      // most secrets or keys tried per request
	maxIDLen      = 256     // longest event id passed on
	maxTypeLen    = 256     // longest event type passed on
)

// Config says how the requests of one source are authenticated.
type Config struct {
	// Provider is one of the names returned by Providers.
	Provider string
	// Secrets are the shared secrets, or for public-key schemes (sendgrid,
	// discord, and v1a Standard Webhooks) the provider's public keys. A
	// request is accepted if any one of them verifies it, which is how a
	// secret is rotated without dropping events. Expired secrets are the
	// caller's to remove: every entry given is treated as valid.
	Secrets []string
	// Tolerance is the clock skew accepted, in both directions, between a
	// signed timestamp and the time of the request. Zero turns the check off.
	Tolerance time.Duration
	// PublicURL is the URL the provider calls, for providers that sign it
	// (twilio, square). It must be exactly what is configured at the
	// provider, query string included.
	PublicURL string
	// HMAC describes the scheme of provider "hmac".
	HMAC *HMACScheme
}

// Request is what Verify needs of an HTTP request. Body must be the raw
// bytes as received.
type Request struct {
	Header http.Header
	Body   []byte
	// Now is the time the request arrived; the zero value means time.Now().
	Now time.Time
}

// Event names a verified webhook.
//
// ID is the provider's event (or delivery) id, stable across the
// provider's retries, so it can be used to detect duplicates. Where the
// provider sends no id, ID is the lower-case hex SHA-256 of the body:
// retries resend the same bytes, so the hash is as stable as an id would be.
//
// Type is never empty: where the provider names no type it is a
// provider-specific default or "unknown".
type Event struct {
	ID   string
	Type string
	// Nonce is a value the signature covers that the provider makes unique
	// per request, where the signature does not cover the event itself
	// (Mailgun's token). The same nonce with another event id means a
	// captured signature on a forged body; the receiver refuses it.
	Nonce string
	// Timed says the signature covers a timestamp checked against the
	// tolerance, so the Nonce needs remembering only while that check
	// passes; otherwise for the whole dedupe window.
	Timed bool
	// Reply, when set, is the answer to a provider handshake (of type
	// ReplyType): the request is no event and is not published.
	Reply     []byte
	ReplyType string
}

// Error is the error Verify returns. Status is 400 when the request is
// malformed and 401 when a signature is missing or wrong or a signed
// timestamp is outside the tolerance. Reason is short and safe to send back
// to the caller: it never contains secrets or computed signatures.
//
// The one exception is a Config that does not pass Validate: Verify then
// answers 500, because the fault is ours and the provider should retry once
// it is fixed.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("webhook verification failed (%d): %s", e.Status, e.Reason)
}

// provider is the entry of one provider in the registry.
type provider struct {
	verify func(c *compiled, r Request) (Event, *Error)
	// validate checks what is specific to the provider (key formats,
	// required fields). It may be nil.
	validate func(c Config) error
}

// registry is read-only after package initialisation.
var registry = map[string]provider{
	"stripe":    {verify: verifyStripe},
	"github":    {verify: verifyGitHub},
	"slack":     {verify: verifySlack},
	"shopify":   {verify: verifyShopify},
	"twilio":    {verify: verifyTwilio, validate: validateTwilio},
	"standard":  {verify: verifyStandard, validate: validateStandard},
	"paddle":    {verify: verifyPaddle},
	"pagerduty": {verify: verifyPagerDuty},
	"square":    {verify: verifySquare, validate: validateSquare},
	"sendgrid":  {verify: verifySendGrid, validate: validateSendGrid},
	"discord":   {verify: verifyDiscord, validate: validateDiscord},
	"zoom":      {verify: verifyZoom},
	"linear":    {verify: verifyLinear},
	"intercom":  {verify: verifyIntercom},
	"mailgun":   {verify: verifyMailgun},
	"hmac":      {verify: verifyHMACScheme, validate: validateHMACScheme},
}

// Providers returns the provider names Config accepts, sorted.
func Providers() []string {
	names := make([]string, 0, len(registry))
	for name := range registry {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Validate reports whether c can verify anything: a known provider, at
// least one secret, well-formed keys for public-key providers, a URL for
// providers that sign one and a complete scheme for provider "hmac".
func (c Config) Validate() error {
	p, ok := registry[c.Provider]
	if !ok {
		return fmt.Errorf("unknown provider %q (want one of %s)", c.Provider, strings.Join(Providers(), ", "))
	}
	if len(c.Secrets) == 0 {
		return fmt.Errorf("%s: at least one secret is required", c.Provider)
	}
	if len(c.Secrets) > maxSecrets {
		return fmt.Errorf("%s: at most %d secrets are allowed, got %d", c.Provider, maxSecrets, len(c.Secrets))
	}
	for i, s := range c.Secrets {
		if s == "" {
			return fmt.Errorf("%s: secret %d is empty", c.Provider, i)
		}
	}
	if c.Tolerance < 0 {
		return fmt.Errorf("%s: tolerance must not be negative", c.Provider)
	}
	if c.HMAC != nil && c.Provider != "hmac" {
		return fmt.Errorf("%s: an HMAC scheme is only used with provider \"hmac\"", c.Provider)
	}
	if p.validate != nil {
		if err := p.validate(c); err != nil {
			return fmt.Errorf("%s: %w", c.Provider, err)
		}
	}
	return nil
}

// Verify authenticates r as a webhook of the provider in c and returns the
// event it carries. The error, when not nil, is an *Error. A receiver
// verifying many requests of one source uses Compile instead.
func Verify(c Config, r Request) (Event, error) {
	v, err := Compile(c, nil)
	if err != nil {
		return Event{}, &Error{Status: http.StatusInternalServerError, Reason: "source misconfigured"}
	}
	return v.Verify(r)
}

// Errors shared by the providers.

func errMissing(header string) *Error {
	return &Error{Status: http.StatusUnauthorized, Reason: "missing " + header + " header"}
}

func errMalformed(what string) *Error {
	return &Error{Status: http.StatusBadRequest, Reason: "malformed " + what}
}

func errMismatch() *Error {
	return &Error{Status: http.StatusUnauthorized, Reason: "signature mismatch"}
}

func errStale() *Error {
	return &Error{Status: http.StatusUnauthorized, Reason: "timestamp outside tolerance"}
}

func errTooMany(header string) *Error {
	return &Error{Status: http.StatusBadRequest, Reason: "too many signatures in " + header + " header"}
}

// header returns a header that must be present. A missing header is a
// missing credential (401); an oversized one is malformed (400) and is not
// looked at further.
func header(r Request, name string) (string, *Error) {
	v := r.Header.Get(name)
	if v == "" {
		return "", errMissing(name)
	}
	if len(v) > maxHeaderLen {
		return "", &Error{Status: http.StatusBadRequest, Reason: name + " header too long"}
	}
	return v, nil
}

// optionalHeader returns a header that may be absent ("").
func optionalHeader(r Request, name string) (string, *Error) {
	v := r.Header.Get(name)
	if len(v) > maxHeaderLen {
		return "", &Error{Status: http.StatusBadRequest, Reason: name + " header too long"}
	}
	return v, nil
}

// parseUnix parses a signed Unix timestamp in seconds. Only plain decimal
// digits are accepted: the timestamp is part of the signed content, and
// a lenient parser would let one signature stand for several spellings.
func parseUnix(s, what string) (time.Time, *Error) {
	n, ok := parseDigits(s)
	if !ok {
		return time.Time{}, errMalformed(what)
	}
	return time.Unix(n, 0), nil
}

// parseUnixAuto parses a Unix timestamp in seconds or, for values too large
// to be seconds in this era (13 digits and more), in milliseconds.
func parseUnixAuto(s, what string) (time.Time, *Error) {
	n, ok := parseDigits(s)
	if !ok {
		return time.Time{}, errMalformed(what)
	}
	if n >= 1e12 {
		return time.UnixMilli(n), nil
	}
	return time.Unix(n, 0), nil
}

func parseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// checkTime refuses a signed timestamp further than c.Tolerance from the
// request time, in either direction: a timestamp in the future is as
// suspect as an old one. Tolerance 0 turns the check off.
func checkTime(c *compiled, r Request, t time.Time) *Error {
	if c.Tolerance <= 0 {
		return nil
	}
	// Sub saturates rather than overflows, and comparing against both
	// bounds avoids negating the smallest Duration.
	d := r.Now.Sub(t)
	if d > c.Tolerance || d < -c.Tolerance {
		return errStale()
	}
	return nil
}

// bodyHash is the id of events whose provider sends none.
func bodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// macOf returns the HMAC of the concatenated parts.
func macOf(newHash func() hash.Hash, key []byte, parts ...[]byte) []byte {
	m := hmac.New(newHash, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// rawKeys returns the secrets as HMAC keys, used byte for byte, which is
// how nearly every provider uses its secret.
func rawKeys(secrets []string) [][]byte {
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		keys[i] = []byte(s)
	}
	return keys
}

// matchHMAC reports which key, if any, produced one of sigs over the
// concatenated parts. The MAC is computed once per key and compared with
// hmac.Equal, in constant time.
func matchHMAC(keys [][]byte, newHash func() hash.Hash, sigs [][]byte, parts ...[]byte) (int, bool) {
	for i, key := range keys {
		mac := macOf(newHash, key, parts...)
		for _, sig := range sigs {
			if hmac.Equal(mac, sig) {
				return i, true
			}
		}
	}
	return -1, false
}

// signatureNonce is the Nonce of providers that send the event id (and
// often the type) in headers their signature does not cover: GitHub,
// Shopify, Linear, Twilio. The MAC that verified the request is a digest of
// everything the provider signed, so a captured request replayed under a
// new id header carries the same MAC, and the receiver, which binds the
// nonce to the first id it arrived with, refuses it. The provider's own
// retries keep the id and pass.
func signatureNonce(provider string, mac []byte) string {
	d := sha256.Sum256(append([]byte(provider+"\x00"), mac...))
	return "sig:" + hex.EncodeToString(d[:])
}

// decodeHex decodes a hex signature. Upper case is accepted.
func decodeHex(s string) ([]byte, bool) {
	b, err := hex.DecodeString(s)
	return b, err == nil && len(b) > 0
}

// decodeBase64 decodes a standard base64 signature, with or without
// padding.
func decodeBase64(s string) ([]byte, bool) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) > 0 {
		return b, true
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	return b, err == nil && len(b) > 0
}

// jsonText reads a JSON string or number as text and ignores any other
// kind of value, so that a field whose type differs from the documented
// one cannot make a verified body unreadable.
type jsonText string

func (t *jsonText) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = jsonText(s)
	case len(b) > 0 && (b[0] == '-' || (b[0] >= '0' && b[0] <= '9')):
		*t = jsonText(b)
	}
	return nil
}

// decodeJSON reads fields of a verified body. Only a syntax error is an
// error: a field of an unexpected type is left empty.
func decodeJSON(body []byte, v any) *Error {
	err := json.Unmarshal(body, v)
	var typeErr *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &typeErr) {
		return errMalformed("JSON body")
	}
	return nil
}

// looksLikeJSON reports whether body starts, after white space, like a JSON
// object or array.
func looksLikeJSON(body []byte) bool {
	for _, b := range body {
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case '{', '[':
			return true
		}
		return false
	}
	return false
}

// event finishes an Event: the body hash stands in for a missing id and
// "unknown" for a missing type. Absurdly long values are refused rather
// than cut, because a cut id could make two events look like one.
func event(id, typ string, body []byte) (Event, *Error) {
	if id == "" {
		id = bodyHash(body)
	}
	if typ == "" {
		typ = "unknown"
	}
	if len(id) > maxIDLen {
		return Event{}, errMalformed("event id: too long")
	}
	if len(typ) > maxTypeLen {
		return Event{}, errMalformed("event type: too long")
	}
	return Event{ID: id, Type: typ}, nil
}
