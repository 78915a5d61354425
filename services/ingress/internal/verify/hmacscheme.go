package verify

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
)

// HMACScheme describes a provider not listed here that signs with an HMAC
// (provider "hmac").
type HMACScheme struct {
	// SignatureHeader holds the signature. Required.
	SignatureHeader string
	// Algorithm is sha1, sha256 or sha512; empty means sha256.
	Algorithm string
	// Encoding of the signature: hex or base64; empty means hex.
	Encoding string
	// Prefix precedes the encoded signature in the header, e.g. "sha256=".
	// When set it is required.
	Prefix string
	// SignedContent is the template of what is signed, made of literal
	// text and the placeholders {id}, {timestamp} and {body}; it must
	// contain {body} exactly once. Empty means "{body}".
	SignedContent string
	// TimestampHeader holds a Unix timestamp (seconds, or milliseconds
	// for values of 13 digits and more). It must be set exactly when
	// SignedContent uses {timestamp}: checking an unsigned timestamp would
	// protect against nothing.
	TimestampHeader string
	// IDHeader holds the event id; without it the id is the body hash.
	// Required when SignedContent uses {id}.
	IDHeader string
	// TypeHeader holds the event type; without it the type is the JSON
	// body's "type" or "unknown".
	TypeHeader string
}

// templatePart is a literal (name == "") or a placeholder of SignedContent.
type templatePart struct {
	literal string
	name    string
}

// parseTemplate splits a SignedContent template into parts.
func parseTemplate(t string) ([]templatePart, error) {
	if t == "" {
		t = "{body}"
	}
	var parts []templatePart
	bodies := 0
	for t != "" {
		open := strings.IndexByte(t, '{')
		if open < 0 {
			parts = append(parts, templatePart{literal: t})
			break
		}
		if open > 0 {
			parts = append(parts, templatePart{literal: t[:open]})
		}
		end := strings.IndexByte(t[open:], '}')
		if end < 0 {
			return nil, errors.New("signed content: unclosed {")
		}
		name := t[open+1 : open+end]
		switch name {
		case "body":
			bodies++
		case "id", "timestamp":
		default:
			return nil, fmt.Errorf("signed content: unknown placeholder {%s} (want {id}, {timestamp} or {body})", name)
		}
		parts = append(parts, templatePart{name: name})
		t = t[open+end+1:]
	}
	if bodies != 1 {
		return nil, errors.New("signed content must contain {body} exactly once")
	}
	return parts, nil
}

func (s *HMACScheme) hash() (func() hash.Hash, error) {
	switch s.Algorithm {
	case "", "sha256":
		return sha256.New, nil
	case "sha1":
		return sha1.New, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("algorithm %q: want sha1, sha256 or sha512", s.Algorithm)
}

func validateHMACScheme(c Config) error {
	s := c.HMAC
	if s == nil {
		return errors.New("an HMAC scheme is required")
	}
	if s.SignatureHeader == "" {
		return errors.New("signature header is required")
	}
	for _, h := range []string{s.SignatureHeader, s.TimestampHeader, s.IDHeader, s.TypeHeader} {
		if h != "" && !validHeaderName(h) {
			return fmt.Errorf("%q is not a valid header name", h)
		}
	}
	if _, err := s.hash(); err != nil {
		return err
	}
	switch s.Encoding {
	case "", "hex", "base64":
	default:
		return fmt.Errorf("encoding %q: want hex or base64", s.Encoding)
	}
	parts, err := parseTemplate(s.SignedContent)
	if err != nil {
		return err
	}
	uses := map[string]bool{}
	for _, p := range parts {
		uses[p.name] = true
	}
	if uses["timestamp"] != (s.TimestampHeader != "") {
		return errors.New("timestamp header must be set exactly when signed content uses {timestamp}")
	}
	if uses["id"] && s.IDHeader == "" {
		return errors.New("signed content uses {id} but no id header is set")
	}
	return nil
}

func validHeaderName(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return h != ""
}

func verifyHMACScheme(c *compiled, r Request) (Event, *Error) {
	s, newHash, parts := c.HMAC, c.hmacHash, c.hmacParts
	h, err := header(r, s.SignatureHeader)
	if err != nil {
		return Event{}, err
	}
	enc, ok := strings.CutPrefix(h, s.Prefix)
	if !ok {
		return Event{}, errMalformed(s.SignatureHeader + " header: want prefix " + s.Prefix)
	}
	var sig []byte
	if s.Encoding == "base64" {
		sig, ok = decodeBase64(enc)
	} else {
		sig, ok = decodeHex(enc)
	}
	if !ok {
		return Event{}, errMalformed(s.SignatureHeader + " header: bad encoding")
	}
	var id, ts string
	if s.IDHeader != "" {
		if id, err = optionalHeader(r, s.IDHeader); err != nil {
			return Event{}, err
		}
	}
	if s.TimestampHeader != "" {
		if ts, err = header(r, s.TimestampHeader); err != nil {
			return Event{}, err
		}
		t, err := parseUnixAuto(ts, s.TimestampHeader+" header")
		if err != nil {
			return Event{}, err
		}
		if err := checkTime(c, r, t); err != nil {
			return Event{}, err
		}
	}
	content := make([][]byte, 0, len(parts))
	for _, p := range parts {
		switch p.name {
		case "":
			content = append(content, []byte(p.literal))
		case "body":
			content = append(content, r.Body)
		case "id":
			if id == "" {
				return Event{}, errMissing(s.IDHeader)
			}
			content = append(content, []byte(id))
		case "timestamp":
			content = append(content, []byte(ts))
		}
	}
	if _, ok := matchHMAC(c.raw, newHash, [][]byte{sig}, content...); !ok {
		return Event{}, errMismatch()
	}
	typ := ""
	if s.TypeHeader != "" {
		if typ, err = optionalHeader(r, s.TypeHeader); err != nil {
			return Event{}, err
		}
	}
	if typ == "" && looksLikeJSON(r.Body) {
		var t [1]string
		if jsonFields(r.Body, typeField, t[:]) == nil {
			typ = t[0]
		}
	}
	ev, verr := event(id, typ, r.Body)
	if !slices.ContainsFunc(parts, func(p templatePart) bool { return p.name == "id" }) {
		// The id is not signed: see signatureNonce.
		ev.Nonce = signatureNonce("hmac", sig)
		ev.Timed = s.TimestampHeader != "" && c.Tolerance > 0
	}
	return ev, verr
}
