package verify

import (
	"crypto/sha256"
	"strings"
)

// Stripe signs "<t>.<body>" with HMAC-SHA256 and sends
//
//	Stripe-Signature: t=1492774577,v1=5257a869...,v0=6ffbb59b...
//
// The key is the endpoint secret exactly as Stripe shows it, "whsec_"
// prefix included (unlike Standard Webhooks, the secret is not decoded).
// While a secret is being rolled Stripe sends one v1 entry per active
// secret, so every v1 entry is tried. v0 (a legacy test-mode scheme) and
// unknown keys are ignored, as Stripe's own libraries do.

const stripeHeader = "Stripe-Signature"

// parseStripeHeader returns the timestamp and the decoded v1 signatures.
func parseStripeHeader(v string) (ts string, sigs [][]byte, err *Error) {
	if len(v) > maxHeaderLen {
		return "", nil, errMalformed(stripeHeader + " header: too long")
	}
	seen := 0
	for item := range strings.SplitSeq(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			if ts != "" {
				return "", nil, errMalformed(stripeHeader + " header: more than one timestamp")
			}
			ts = val
		case "v1":
			seen++
			if seen > maxSignatures {
				return "", nil, errTooMany(stripeHeader)
			}
			// An entry that is not hex cannot match; it is skipped
			// rather than failing the others.
			if sig, ok := decodeHex(val); ok {
				sigs = append(sigs, sig)
			}
		}
	}
	if ts == "" {
		return "", nil, errMalformed(stripeHeader + " header: no timestamp")
	}
	return ts, sigs, nil
}

func verifyStripe(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, stripeHeader)
	if err != nil {
		return Event{}, err
	}
	ts, sigs, err := parseStripeHeader(h)
	if err != nil {
		return Event{}, err
	}
	t, err := parseUnix(ts, stripeHeader+" timestamp")
	if err != nil {
		return Event{}, err
	}
	if len(sigs) == 0 {
		return Event{}, &Error{Status: 401, Reason: "no v1 signature in " + stripeHeader + " header"}
	}
	if err := checkTime(c, r, t); err != nil {
		return Event{}, err
	}
	if _, ok := matchHMAC(c.raw, sha256.New, sigs, []byte(ts), []byte("."), r.Body); !ok {
		return Event{}, errMismatch()
	}
	var v [2]string
	if err := jsonFields(r.Body, stripeFields, v[:]); err != nil {
		return Event{}, err
	}
	return event(v[0], v[1], r.Body)
}

var stripeFields = []string{"id", "type"}
