package verify

import (
	"crypto/sha1"
	"errors"
	"mime"
	"net/url"
	"slices"
	"strings"
)

// Twilio signs with HMAC-SHA1 under the account's auth token and sends the
// base64 MAC in X-Twilio-Signature. What it signs depends on the body:
//
//   - Form posts (application/x-www-form-urlencoded, nearly all
//     webhooks): the full URL it called followed by every POST parameter,
//     sorted by name (then by value for repeated names), each name
//     immediately followed by its value.
//   - JSON bodies: Twilio adds a bodySHA256 query parameter, the hex
//     SHA-256 of the body, to the URL it calls and signs that URL alone.
//     Request has no URL, so the signed URL is rebuilt as PublicURL plus
//     "bodySHA256=<hex sha256 of the body>"; the body is therefore bound
//     to the signature through its hash. PublicURL itself must not carry
//     bodySHA256 (Validate refuses it).
//
// Ports: Twilio's helper libraries disagree on whether the signed URL
// carries the scheme's default port (some add :443/:80 before computing,
// some strip it), and what Twilio signs follows the URL as configured.
// We accept the URL both with and without the default port for its
// scheme, and nothing else: a non-default port is part of the URL. The
// user-info part of a URL, if any, is left as configured.
//
// The id is the I-Twilio-Idempotency-Token header, which Twilio keeps
// across retries. Without it the id is the body hash, not MessageSid or
// CallSid: those name a message or a call, which send many webhooks
// (each status change, each gathered digit), and using them as event ids
// would make deduplication drop all but the first. The type is "message"
// or "call" followed by the status when there is one ("message.delivered",
// "call.completed"), the "type" of a JSON body, or "unknown".

const (
	twilioSigHeader         = "X-Twilio-Signature"
	twilioIdempotencyHeader = "I-Twilio-Idempotency-Token"
)

func validateTwilio(c Config) error {
	u, err := validatePublicURL(c.PublicURL)
	if err != nil {
		return err
	}
	if q, err := url.ParseQuery(u.RawQuery); err == nil && q.Has("bodySHA256") {
		return errors.New("public URL must not contain bodySHA256: Twilio adds it for JSON bodies")
	}
	return nil
}

// validatePublicURL checks that a signed URL is an absolute http(s) URL.
func validatePublicURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("public URL is required: the provider signs it")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("public URL does not parse")
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("public URL must be an absolute http or https URL")
	}
	return u, nil
}

func verifyTwilio(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, twilioSigHeader)
	if err != nil {
		return Event{}, err
	}
	sig, ok := decodeBase64(h)
	if !ok {
		return Event{}, errMalformed(twilioSigHeader + " header: not base64")
	}
	isJSON, err := twilioIsJSON(r)
	if err != nil {
		return Event{}, err
	}
	var signed []string
	var form url.Values
	if isJSON {
		sep := "?"
		if strings.Contains(c.PublicURL, "?") {
			sep = "&"
		}
		signed = twilioURLForms(c.PublicURL + sep + "bodySHA256=" + bodyHash(r.Body))
	} else {
		var params string
		form, params, err = twilioParams(r.Body)
		if err != nil {
			return Event{}, err
		}
		for _, u := range twilioURLForms(c.PublicURL) {
			signed = append(signed, u+params)
		}
	}
	matched := false
	keys := c.raw
	for _, s := range signed {
		if _, ok := matchHMAC(keys, sha1.New, [][]byte{sig}, []byte(s)); ok {
			matched = true
			break
		}
	}
	if !matched {
		return Event{}, errMismatch()
	}
	id, err := optionalHeader(r, twilioIdempotencyHeader)
	if err != nil {
		return Event{}, err
	}
	ev, verr := event(id, twilioType(isJSON, form, r.Body), r.Body)
	ev.Nonce = signatureNonce("twilio", sig)
	return ev, verr
}

// twilioIsJSON reports whether the body is JSON, by its Content-Type.
func twilioIsJSON(r Request) (bool, *Error) {
	ct, err := optionalHeader(r, "Content-Type")
	if err != nil || ct == "" {
		return false, err
	}
	mt, _, perr := mime.ParseMediaType(ct)
	if perr != nil {
		return false, errMalformed("Content-Type header")
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json"), nil
}

// twilioParams parses a form body and returns it with the parameter string
// Twilio signs. Names must be non-empty and free of '?', '&', '=', '#' and
// ':': Twilio never sends such names, and refusing them makes sure that no
// form body's parameter string can reproduce the "?bodySHA256=..." suffix
// of a JSON request's signed URL, neither on the same URL form nor on the
// port-less form followed by ":<port>?bodySHA256=...", so that a signature
// over one kind of body cannot be replayed with the other.
func twilioParams(body []byte) (url.Values, string, *Error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, "", errMalformed("form body")
	}
	names := make([]string, 0, len(form))
	for name := range form {
		if name == "" || strings.ContainsAny(name, "?&=#:") {
			return nil, "", errMalformed("form body: bad parameter name")
		}
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		values := slices.Clone(form[name])
		slices.Sort(values)
		for _, v := range values {
			b.WriteString(name)
			b.WriteString(v)
		}
	}
	return form, b.String(), nil
}

// twilioURLForms returns raw as given and with its scheme's default port
// added or removed. Only the host part changes; path and query stay byte
// for byte as configured.
func twilioURLForms(raw string) []string {
	forms := []string{raw}
	u, err := url.Parse(raw)
	if err != nil {
		return forms
	}
	var def string
	switch u.Scheme {
	case "https":
		def = "443"
	case "http":
		def = "80"
	default:
		return forms
	}
	i := strings.Index(raw, "://")
	if i < 0 {
		return forms
	}
	rest := raw[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	at := strings.LastIndex(authority, "@")
	userinfo, hostport := authority[:at+1], authority[at+1:]
	var alt string
	switch u.Port() {
	case "":
		alt = hostport + ":" + def
	case def:
		alt = strings.TrimSuffix(hostport, ":"+def)
	default:
		return forms
	}
	return append(forms, raw[:i+3]+userinfo+alt+rest[end:])
}

// twilioType names a verified Twilio webhook.
func twilioType(isJSON bool, form url.Values, body []byte) string {
	if isJSON {
		var b struct {
			Type jsonText `json:"type"`
		}
		if decodeJSON(body, &b) != nil {
			return ""
		}
		return string(b.Type)
	}
	status := func(names ...string) string {
		for _, n := range names {
			if v := form.Get(n); v != "" {
				return "." + strings.ToLower(v)
			}
		}
		return ""
	}
	switch {
	case form.Get("MessageSid") != "" || form.Get("SmsSid") != "":
		return "message" + status("MessageStatus", "SmsStatus")
	case form.Get("CallSid") != "":
		return "call" + status("CallStatus")
	}
	return ""
}
