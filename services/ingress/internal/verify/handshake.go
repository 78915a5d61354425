package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// maxChallengeLen caps what is echoed back in a handshake.
const maxChallengeLen = 1024

// Handshakes are the requests a provider sends to check that an endpoint
// is really its subscriber, which must be answered with a
// provider-specific body (Event.Reply) instead of being treated as an
// event:
//
//   - Slack url_verification: the "challenge" is echoed as text/plain.
//   - Zoom endpoint.url_validation: {"plainToken": ..., "encryptedToken":
//     hex HMAC-SHA256(secret, plainToken)}.
//   - Discord interaction PING (type 1): {"type":1} (PONG).
//
// A handshake is answered only when the request itself verifies: the
// provider's verify function recognises it after the signature check, in
// the same pass. For Zoom this is essential and not just tidy: the answer
// is an HMAC under the same secret that signs Zoom's webhooks, so
// answering unverified requests would let anyone obtain a valid signature
// of their choosing. For rotation, Zoom's answer uses the secret that
// verified the request.

// Handshake returns the answer to r if it is a verified provider
// handshake; ok is false for every other request, including ones that do
// not verify.
func Handshake(c Config, r Request) (body []byte, contentType string, ok bool) {
	ev, err := Verify(c, r)
	if err != nil || ev.Reply == nil {
		return nil, "", false
	}
	return ev.Reply, ev.ReplyType, true
}

// slackReply answers a verified url_verification request.
func slackReply(ev *Event, b slackBody) {
	if b.Type == "url_verification" && b.Challenge != "" && len(b.Challenge) <= maxChallengeLen {
		ev.Reply, ev.ReplyType = []byte(b.Challenge), "text/plain; charset=utf-8"
	}
}

// zoomReply answers a verified endpoint.url_validation request.
func zoomReply(ev *Event, b zoomBody, secret string) {
	token := string(b.Payload.PlainToken)
	if b.Event != "endpoint.url_validation" || token == "" || len(token) > maxChallengeLen {
		return
	}
	out, err := json.Marshal(struct {
		PlainToken     string `json:"plainToken"`
		EncryptedToken string `json:"encryptedToken"`
	}{token, zoomEncryptedToken(secret, token)})
	if err == nil {
		ev.Reply, ev.ReplyType = out, "application/json"
	}
}

// zoomEncryptedToken is Zoom's name for hex HMAC-SHA256(secret, plainToken).
func zoomEncryptedToken(secret, plainToken string) string {
	return hex.EncodeToString(macOf(sha256.New, []byte(secret), []byte(plainToken)))
}

// discordReply answers a verified interaction PING with a PONG.
func discordReply(ev *Event, b discordBody) {
	if b.Event == nil && b.Type == "1" {
		ev.Reply, ev.ReplyType = []byte(`{"type":1}`), "application/json"
	}
}
