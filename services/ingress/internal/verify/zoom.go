package verify

// Zoom signs "v0:<timestamp>:<body>" with HMAC-SHA256 under the app's
// secret token, exactly as Slack does, and sends
//
//	x-zm-signature: v0=<hex>
//	x-zm-request-timestamp: <unix seconds>
//
// The type is the body's "event" ("meeting.started"). Zoom sends no event
// id; its retries resend the same body (which includes "event_ts", the
// time the event happened), so the id is the body hash. A hash of
// "event_ts" and the event name alone was rejected: two events of one type
// can share a millisecond.

const (
	zoomSigHeader = "X-Zm-Signature"
	zoomTSHeader  = "X-Zm-Request-Timestamp"
)

// zoomBody is what is read of a Zoom body.
type zoomBody struct {
	Event   jsonText `json:"event"`
	Payload struct {
		PlainToken jsonText `json:"plainToken"`
	} `json:"payload"`
}

func verifyZoom(c *compiled, r Request) (Event, *Error) {
	i, err := matchV0(c, r, zoomSigHeader, zoomTSHeader)
	if err != nil {
		return Event{}, err
	}
	var b zoomBody
	if err := decodeJSON(r.Body, &b); err != nil {
		return Event{}, err
	}
	ev, err := event("", string(b.Event), r.Body)
	if err != nil {
		return Event{}, err
	}
	// The URL validation answer uses the secret that verified it.
	zoomReply(&ev, b, c.Secrets[i])
	return ev, nil
}
