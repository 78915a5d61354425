package verify

import "crypto/sha1"

// Intercom signs the body with HMAC-SHA1 under the app's client secret and
// sends
//
//	X-Hub-Signature: sha1=<hex>
//
// SHA-1 is what Intercom offers; HMAC-SHA1 is still not forgeable. The
// body's "id" (notif_...) is the notification id, kept across retries, and
// "topic" ("conversation.user.created") is the type. There is no signed
// timestamp.

const intercomSigHeader = "X-Hub-Signature"

func verifyIntercom(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, intercomSigHeader)
	if err != nil {
		return Event{}, err
	}
	sig, err := parsePrefixedHex(intercomSigHeader, h, "sha1=")
	if err != nil {
		return Event{}, err
	}
	if _, ok := matchHMAC(c.raw, sha1.New, [][]byte{sig}, r.Body); !ok {
		return Event{}, errMismatch()
	}
	var v [2]string
	if err := jsonFields(r.Body, intercomFields, v[:]); err != nil {
		return Event{}, err
	}
	return event(v[0], v[1], r.Body)
}

var intercomFields = []string{"id", "topic"}
