package verify

import (
	"crypto/sha256"
	"strconv"
	"time"
)

// Linear signs the body with HMAC-SHA256 and sends the hex MAC in
// Linear-Signature. The timestamp Linear signs is inside the body, as
// "webhookTimestamp" in Unix milliseconds; when Tolerance is set it is
// checked after the signature (it is only trustworthy once the body is),
// and a body without one is refused because it cannot be shown fresh.
//
// The id is the Linear-Delivery header; the type is the body's "type" and
// "action" ("Issue.create"), falling back to the Linear-Event header.

const (
	linearSigHeader      = "Linear-Signature"
	linearDeliveryHeader = "Linear-Delivery"
	linearEventHeader    = "Linear-Event"
)

func verifyLinear(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, linearSigHeader)
	if err != nil {
		return Event{}, err
	}
	sig, ok := decodeHex(h)
	if !ok {
		return Event{}, errMalformed(linearSigHeader + " header: not hex")
	}
	if _, ok := matchHMAC(c.raw, sha256.New, [][]byte{sig}, r.Body); !ok {
		return Event{}, errMismatch()
	}
	var body struct {
		Type             jsonText `json:"type"`
		Action           jsonText `json:"action"`
		WebhookTimestamp jsonText `json:"webhookTimestamp"`
	}
	if err := decodeJSON(r.Body, &body); err != nil {
		return Event{}, err
	}
	if c.Tolerance > 0 {
		if body.WebhookTimestamp == "" {
			return Event{}, &Error{Status: 401, Reason: "missing webhookTimestamp in body"}
		}
		ms, err := strconv.ParseInt(string(body.WebhookTimestamp), 10, 64)
		if err != nil {
			return Event{}, errMalformed("webhookTimestamp")
		}
		if err := checkTime(c, r, time.UnixMilli(ms)); err != nil {
			return Event{}, err
		}
	}
	id, err := optionalHeader(r, linearDeliveryHeader)
	if err != nil {
		return Event{}, err
	}
	typ := string(body.Type)
	if typ != "" && body.Action != "" {
		typ += "." + string(body.Action)
	}
	if typ == "" {
		if typ, err = optionalHeader(r, linearEventHeader); err != nil {
			return Event{}, err
		}
	}
	ev, verr := event(id, typ, r.Body)
	ev.Nonce, ev.Timed = signatureNonce("linear", sig), c.Tolerance > 0
	return ev, verr
}
