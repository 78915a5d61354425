package verify

import (
	"crypto/sha256"
	"net/url"
)

// Slack signs "v0:<timestamp>:<body>" with HMAC-SHA256 under the app's
// signing secret and sends
//
//	X-Slack-Signature: v0=<hex>
//	X-Slack-Request-Timestamp: <unix seconds>
//
// Events API bodies are JSON; the id is their "event_id" (kept across
// Slack's retries) and the type is the inner event's type ("app_mention"),
// or the outer type when there is no inner event ("url_verification").
// Slash commands and interactive components are form-encoded and carry no
// event id, so their id is the body hash; an interaction's type is the
// "type" of its JSON "payload" field ("block_actions") and a slash
// command's is "slash_command".

const (
	slackSigHeader = "X-Slack-Signature"
	slackTSHeader  = "X-Slack-Request-Timestamp"
)

// slackBody is what is read of a Slack Events API body.
type slackBody struct {
	EventID   jsonText `json:"event_id"`
	Type      jsonText `json:"type"`
	Challenge jsonText `json:"challenge"`
	Event     struct {
		Type jsonText `json:"type"`
	} `json:"event"`
}

func verifySlack(c *compiled, r Request) (Event, *Error) {
	if err := checkV0(c, r, slackSigHeader, slackTSHeader); err != nil {
		return Event{}, err
	}
	if looksLikeJSON(r.Body) {
		var b slackBody
		if err := decodeJSON(r.Body, &b); err != nil {
			return Event{}, err
		}
		typ := string(b.Event.Type)
		if typ == "" {
			typ = string(b.Type)
		}
		ev, err := event(string(b.EventID), typ, r.Body)
		if err == nil {
			slackReply(&ev, b)
		}
		return ev, err
	}
	form, err := url.ParseQuery(string(r.Body))
	if err != nil {
		return Event{}, errMalformed("form body")
	}
	typ := ""
	switch {
	case form.Has("payload"):
		var p struct {
			Type jsonText `json:"type"`
		}
		if err := decodeJSON([]byte(form.Get("payload")), &p); err != nil {
			return Event{}, err
		}
		typ = string(p.Type)
	case form.Has("command"):
		typ = "slash_command"
	}
	return event("", typ, r.Body)
}

// checkV0 checks the "v0=" scheme that Slack and Zoom share: HMAC-SHA256
// of "v0:<timestamp>:<body>", hex, in sigHeader, with the timestamp in
// tsHeader.
func checkV0(c *compiled, r Request, sigHeader, tsHeader string) *Error {
	_, err := matchV0(c, r, sigHeader, tsHeader)
	return err
}

// matchV0 is checkV0 returning the index of the secret that matched, which
// Zoom's URL validation answer is computed with.
func matchV0(c *compiled, r Request, sigHeader, tsHeader string) (int, *Error) {
	h, err := header(r, sigHeader)
	if err != nil {
		return -1, err
	}
	ts, err := header(r, tsHeader)
	if err != nil {
		return -1, err
	}
	sig, err := parsePrefixedHex(sigHeader, h, "v0=")
	if err != nil {
		return -1, err
	}
	t, err := parseUnix(ts, tsHeader+" header")
	if err != nil {
		return -1, err
	}
	if err := checkTime(c, r, t); err != nil {
		return -1, err
	}
	i, ok := matchHMAC(c.raw, sha256.New, [][]byte{sig}, []byte("v0:"+ts+":"), r.Body)
	if !ok {
		return -1, errMismatch()
	}
	return i, nil
}
