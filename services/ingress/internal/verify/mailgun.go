package verify

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
)

// Mailgun puts its signature in the body, not in a header. Current
// webhooks post JSON:
//
//	{"signature": {"timestamp": "1529006854", "token": "a8ce0edb...",
//	  "signature": "d2271d12..."}, "event-data": {"id": "...", "event": "delivered", ...}}
//
// while legacy webhooks and inbound routes post form fields (urlencoded or
// multipart) named timestamp, token and signature. The signature is the hex
// HMAC-SHA256, under the HTTP webhook signing key, of timestamp followed by
// token.
//
// Mailgun's signature does not cover the event data. A signature block
// captured from one request verifies any body within the tolerance, so
// Tolerance should not be 0 for Mailgun. As Mailgun advises, a token seen
// before is refused, unless it comes back with the same event (a retry):
// the token is the Event's Nonce, which the receiver binds to the event id. The id is event-data.id and the type event-data.event
// (for forms the "event" field and the body hash).

const mailgunMaxParts = 1000

// mailgunFields are the signature fields and event names of a body.
type mailgunFields struct {
	timestamp, token, signature string
	id, typ                     string
}

func verifyMailgun(c *compiled, r Request) (Event, *Error) {
	f, err := mailgunParse(r)
	if err != nil {
		return Event{}, err
	}
	if f.signature == "" || f.timestamp == "" || f.token == "" {
		return Event{}, &Error{Status: 401, Reason: "missing signature, timestamp or token in body"}
	}
	if len(f.signature) > maxHeaderLen || len(f.timestamp) > maxHeaderLen || len(f.token) > maxHeaderLen {
		return Event{}, errMalformed("signature fields: too long")
	}
	sig, ok := decodeHex(f.signature)
	if !ok {
		return Event{}, errMalformed("signature: not hex")
	}
	t, err := parseUnix(f.timestamp, "signature timestamp")
	if err != nil {
		return Event{}, err
	}
	if err := checkTime(c, r, t); err != nil {
		return Event{}, err
	}
	if _, ok := matchHMAC(c.raw, sha256.New, [][]byte{sig}, []byte(f.timestamp), []byte(f.token)); !ok {
		return Event{}, errMismatch()
	}
	ev, err := event(f.id, f.typ, r.Body)
	ev.Nonce, ev.Timed = f.token, c.Tolerance > 0
	return ev, err
}

// mailgunParse reads the signature fields from a JSON, urlencoded or
// multipart body.
func mailgunParse(r Request) (mailgunFields, *Error) {
	var f mailgunFields
	ct, err := optionalHeader(r, "Content-Type")
	if err != nil {
		return f, err
	}
	mt, params, _ := mime.ParseMediaType(ct)
	switch {
	case mt == "application/json" || (mt == "" && looksLikeJSON(r.Body)):
		var b struct {
			Signature struct {
				Timestamp jsonText `json:"timestamp"`
				Token     jsonText `json:"token"`
				Signature jsonText `json:"signature"`
			} `json:"signature"`
			EventData struct {
				ID    jsonText `json:"id"`
				Event jsonText `json:"event"`
			} `json:"event-data"`
		}
		if err := decodeJSON(r.Body, &b); err != nil {
			return f, err
		}
		f.timestamp, f.token, f.signature = string(b.Signature.Timestamp), string(b.Signature.Token), string(b.Signature.Signature)
		f.id, f.typ = string(b.EventData.ID), string(b.EventData.Event)
	case mt == "multipart/form-data":
		fields, err := mailgunMultipart(r.Body, params["boundary"])
		if err != nil {
			return f, err
		}
		f.timestamp, f.token, f.signature, f.typ = fields["timestamp"], fields["token"], fields["signature"], fields["event"]
	default:
		form, err := url.ParseQuery(string(r.Body))
		if err != nil {
			return f, errMalformed("form body")
		}
		f.timestamp, f.token, f.signature, f.typ = form.Get("timestamp"), form.Get("token"), form.Get("signature"), form.Get("event")
	}
	return f, nil
}

// mailgunMultipart reads the signature fields of a multipart body, reading
// at most maxHeaderLen bytes of each and skipping everything else
// (attachments of inbound mail in particular).
func mailgunMultipart(body []byte, boundary string) (map[string]string, *Error) {
	if boundary == "" {
		return nil, errMalformed("multipart body: no boundary")
	}
	want := map[string]bool{"timestamp": true, "token": true, "signature": true, "event": true}
	fields := make(map[string]string)
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for range mailgunMaxParts {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return fields, nil
		}
		if err != nil {
			return nil, errMalformed("multipart body")
		}
		name := p.FormName()
		if !want[name] || p.FileName() != "" {
			continue
		}
		if _, seen := fields[name]; seen {
			continue
		}
		v, err := io.ReadAll(io.LimitReader(p, maxHeaderLen+1))
		if err != nil {
			return nil, errMalformed("multipart body")
		}
		if len(v) > maxHeaderLen {
			return nil, errMalformed("multipart field " + name + ": too long")
		}
		fields[name] = string(v)
	}
	return nil, errMalformed("multipart body: too many parts")
}
