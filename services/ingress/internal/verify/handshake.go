package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// maxChallengeLen caps what is echoed back in a handshake.
const maxChallengeLen = 1024

// Handshake answers the requests a provider sends to check that an
// endpoint is really its subscriber, which must be answered with a
// provider-specific body instead of being treated as an event:
//
//   - Slack url_verification: the "challenge" is echoed as text/plain.
//   - Zoom endpoint.url_validation: {"plainToken": ..., "encryptedToken":
//     hex HMAC-SHA256(secret, plainToken)}.
//   - Discord interaction PING (type 1): {"type":1} (PONG).
//
// A handshake is answered only when the request itself verifies. For Zoom
// this is essential and not just tidy: the answer is an HMAC under the
// same secret that signs Zoom's webhooks, so answering unverified
// requests would let anyone obtain a valid signature of their choosing.
// For rotation, Zoom's answer uses the secret that verified the request.
//
// ok is false for every other request, including ones that do not verify;
// the caller then goes on to Verify as usual.
func Handshake(c Config, r Request) (body []byte, contentType string, ok bool) {
	if c.Validate() != nil {
		return nil, "", false
	}
	switch c.Provider {
	case "slack":
		return slackHandshake(c, r)
	case "zoom":
		return zoomHandshake(c, r)
	case "discord":
		return discordHandshake(c, r)
	}
	return nil, "", false
}

func slackHandshake(c Config, r Request) ([]byte, string, bool) {
	if _, err := verify(c, r); err != nil {
		return nil, "", false
	}
	var b slackBody
	if !looksLikeJSON(r.Body) || decodeJSON(r.Body, &b) != nil {
		return nil, "", false
	}
	if b.Type != "url_verification" || b.Challenge == "" || len(b.Challenge) > maxChallengeLen {
		return nil, "", false
	}
	return []byte(b.Challenge), "text/plain; charset=utf-8", true
}

func zoomHandshake(c Config, r Request) ([]byte, string, bool) {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	_, b, secret, err := checkZoom(c, r)
	if err != nil || b.Event != "endpoint.url_validation" {
		return nil, "", false
	}
	token := string(b.Payload.PlainToken)
	if token == "" || len(token) > maxChallengeLen {
		return nil, "", false
	}
	out, jerr := json.Marshal(struct {
		PlainToken     string `json:"plainToken"`
		EncryptedToken string `json:"encryptedToken"`
	}{token, zoomEncryptedToken(secret, token)})
	if jerr != nil {
		return nil, "", false
	}
	return out, "application/json", true
}

// zoomEncryptedToken is Zoom's name for hex HMAC-SHA256(secret, plainToken).
func zoomEncryptedToken(secret, plainToken string) string {
	return hex.EncodeToString(macOf(sha256.New, []byte(secret), []byte(plainToken)))
}

func discordHandshake(c Config, r Request) ([]byte, string, bool) {
	if _, err := verify(c, r); err != nil {
		return nil, "", false
	}
	if !discordIsPing(r.Body) {
		return nil, "", false
	}
	return []byte(`{"type":1}`), "application/json", true
}
