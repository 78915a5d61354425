package verify

import "crypto/sha256"

// Square signs the notification URL followed by the body with HMAC-SHA256
// under the subscription's signature key and sends the base64 MAC in
// x-square-hmacsha256-signature. The URL must be the one configured at
// Square, byte for byte (PublicURL). The legacy SHA-1 x-square-signature
// header is not accepted. There is no signed timestamp.
//
// The id is the body's "event_id" and the type its "type"
// ("payment.updated").

const squareSigHeader = "X-Square-Hmacsha256-Signature"

func validateSquare(c Config) error {
	_, err := validatePublicURL(c.PublicURL)
	return err
}

func verifySquare(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, squareSigHeader)
	if err != nil {
		return Event{}, err
	}
	sig, ok := decodeBase64(h)
	if !ok {
		return Event{}, errMalformed(squareSigHeader + " header: not base64")
	}
	if _, ok := matchHMAC(c.raw, sha256.New, [][]byte{sig}, []byte(c.PublicURL), r.Body); !ok {
		return Event{}, errMismatch()
	}
	var v [2]string
	if err := jsonFields(r.Body, squareFields, v[:]); err != nil {
		return Event{}, err
	}
	return event(v[0], v[1], r.Body)
}

var squareFields = []string{"event_id", "type"}
