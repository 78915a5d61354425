package verify

import (
	"crypto/sha256"
	"net/url"
	"strings"
)

// GitHub signs the body with HMAC-SHA256 and sends
//
//	X-Hub-Signature-256: sha256=<hex>
//
// The legacy SHA-1 X-Hub-Signature header is not accepted: GitHub sends
// both, and accepting the weaker one would let it stand in for the other.
//
// The id is X-GitHub-Delivery, which GitHub keeps across redeliveries. The
// type is X-GitHub-Event, followed by "." and the body's "action" when the
// event has one ("pull_request.opened", "issues.closed", but "push"). The
// action is where most of the meaning is, and with it in the routing key a
// subscriber can bind to "github.pull_request.opened" or, for every action,
// "github.pull_request.#".

const (
	githubSigHeader      = "X-Hub-Signature-256"
	githubDeliveryHeader = "X-GitHub-Delivery"
	githubEventHeader    = "X-GitHub-Event"
)

// parsePrefixedHex decodes a "<prefix><hex>" signature header value.
func parsePrefixedHex(name, v, prefix string) ([]byte, *Error) {
	rest, ok := strings.CutPrefix(v, prefix)
	if !ok {
		return nil, errMalformed(name + " header: want " + prefix + "<hex>")
	}
	sig, ok := decodeHex(rest)
	if !ok {
		return nil, errMalformed(name + " header: not hex")
	}
	return sig, nil
}

func verifyGitHub(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, githubSigHeader)
	if err != nil {
		return Event{}, err
	}
	sig, err := parsePrefixedHex(githubSigHeader, h, "sha256=")
	if err != nil {
		return Event{}, err
	}
	if _, ok := matchHMAC(c.raw, sha256.New, [][]byte{sig}, r.Body); !ok {
		return Event{}, errMismatch()
	}
	id, err := optionalHeader(r, githubDeliveryHeader)
	if err != nil {
		return Event{}, err
	}
	typ, err := optionalHeader(r, githubEventHeader)
	if err != nil {
		return Event{}, err
	}
	if typ != "" {
		if action := githubAction(r.Body); action != "" {
			typ += "." + action
		}
	}
	ev, verr := event(id, typ, r.Body)
	ev.Nonce = signatureNonce("github", sig)
	return ev, verr
}

// githubAction returns the "action" of a JSON body, or of the JSON in the
// "payload" field of a form-encoded body (GitHub's other content type).
// The body has been verified; a body it cannot read simply has no action.
func githubAction(body []byte) string {
	if !looksLikeJSON(body) {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return ""
		}
		body = []byte(form.Get("payload"))
	}
	var b struct {
		Action jsonText `json:"action"`
	}
	if decodeJSON(body, &b) != nil {
		return ""
	}
	return string(b.Action)
}
