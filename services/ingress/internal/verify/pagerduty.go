package verify

import (
	"crypto/sha256"
	"strings"
)

// PagerDuty (V3 webhooks) signs the body with HMAC-SHA256 and sends
//
//	X-PagerDuty-Signature: v1=<hex>,v1=<hex>
//
// with one entry per active secret. There is no signed timestamp, so
// Tolerance does not apply; replays are caught by the event id.

const pagerDutyHeader = "X-PagerDuty-Signature"

// parsePagerDutyHeader returns the decoded v1 signatures. Entries of other
// versions are ignored so that a future scheme can be added alongside.
func parsePagerDutyHeader(v string) ([][]byte, *Error) {
	if len(v) > maxHeaderLen {
		return nil, errMalformed(pagerDutyHeader + " header: too long")
	}
	var sigs [][]byte
	seen := 0
	for item := range strings.SplitSeq(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || k != "v1" {
			continue
		}
		seen++
		if seen > maxSignatures {
			return nil, errTooMany(pagerDutyHeader)
		}
		if sig, ok := decodeHex(val); ok {
			sigs = append(sigs, sig)
		}
	}
	return sigs, nil
}

func verifyPagerDuty(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, pagerDutyHeader)
	if err != nil {
		return Event{}, err
	}
	sigs, err := parsePagerDutyHeader(h)
	if err != nil {
		return Event{}, err
	}
	if len(sigs) == 0 {
		return Event{}, &Error{Status: 401, Reason: "no v1 signature in " + pagerDutyHeader + " header"}
	}
	if _, ok := matchHMAC(c.raw, sha256.New, sigs, r.Body); !ok {
		return Event{}, errMismatch()
	}
	var body struct {
		Event struct {
			ID        jsonText `json:"id"`
			EventType jsonText `json:"event_type"`
		} `json:"event"`
	}
	if err := decodeJSON(r.Body, &body); err != nil {
		return Event{}, err
	}
	return event(string(body.Event.ID), string(body.Event.EventType), r.Body)
}
