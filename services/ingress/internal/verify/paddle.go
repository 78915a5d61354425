package verify

import (
	"crypto/sha256"
	"strings"
)

// Paddle Billing signs "<ts>:<body>" with HMAC-SHA256 under the
// notification destination's secret key and sends
//
//	Paddle-Signature: ts=1671552777;h1=eb4d0dc8...
//
// with one h1 entry per active secret while a secret is being rotated.
//
// Paddle's SDKs accept a timestamp up to 5 seconds old. We use the
// configured Tolerance instead, like every other provider here: 5 seconds
// refuses genuine retries delivered behind a queue or a slow proxy, and an
// operator who wants Paddle's window sets Tolerance to 5s.

const paddleHeader = "Paddle-Signature"

// parsePaddleHeader returns the timestamp and the decoded h1 signatures.
func parsePaddleHeader(v string) (ts string, sigs [][]byte, err *Error) {
	if len(v) > maxHeaderLen {
		return "", nil, errMalformed(paddleHeader + " header: too long")
	}
	seen := 0
	for item := range strings.SplitSeq(v, ";") {
		k, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			continue
		}
		switch k {
		case "ts":
			if ts != "" {
				return "", nil, errMalformed(paddleHeader + " header: more than one timestamp")
			}
			ts = val
		case "h1":
			seen++
			if seen > maxSignatures {
				return "", nil, errTooMany(paddleHeader)
			}
			if sig, ok := decodeHex(val); ok {
				sigs = append(sigs, sig)
			}
		}
	}
	if ts == "" {
		return "", nil, errMalformed(paddleHeader + " header: no timestamp")
	}
	return ts, sigs, nil
}

func verifyPaddle(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, paddleHeader)
	if err != nil {
		return Event{}, err
	}
	ts, sigs, err := parsePaddleHeader(h)
	if err != nil {
		return Event{}, err
	}
	t, err := parseUnix(ts, paddleHeader+" timestamp")
	if err != nil {
		return Event{}, err
	}
	if len(sigs) == 0 {
		return Event{}, &Error{Status: 401, Reason: "no h1 signature in " + paddleHeader + " header"}
	}
	if err := checkTime(c, r, t); err != nil {
		return Event{}, err
	}
	if _, ok := matchHMAC(c.raw, sha256.New, sigs, []byte(ts), []byte(":"), r.Body); !ok {
		return Event{}, errMismatch()
	}
	var v [2]string
	if err := jsonFields(r.Body, paddleFields, v[:]); err != nil {
		return Event{}, err
	}
	return event(v[0], v[1], r.Body)
}

var paddleFields = []string{"event_id", "event_type"}
