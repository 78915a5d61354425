package verify

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Discord signs "<timestamp><body>" with Ed25519 and sends
//
//	X-Signature-Ed25519: <hex signature>
//	X-Signature-Timestamp: <unix seconds>
//
// The configured key is the application's public key, in hex, as the
// developer portal shows it.
//
// The same scheme covers two kinds of request. Interactions carry an "id"
// (the id) and a numeric "type": 1 PING, 2 APPLICATION_COMMAND,
// 3 MESSAGE_COMPONENT, 4 APPLICATION_COMMAND_AUTOCOMPLETE, 5 MODAL_SUBMIT,
// named here in lower case ("ping", "application_command"). Webhook events
// carry an "event" object whose "type" names them ("APPLICATION_AUTHORIZED")
// and no id, so their id is the body hash; their PING (type 0, no event) is
// "ping" too.

const (
	discordSigHeader = "X-Signature-Ed25519"
	discordTSHeader  = "X-Signature-Timestamp"
)

var discordInteractionTypes = map[string]string{
	"1": "ping",
	"2": "application_command",
	"3": "message_component",
	"4": "application_command_autocomplete",
	"5": "modal_submit",
}

func parseDiscordKeys(secrets []string) ([]ed25519.PublicKey, error) {
	keys := make([]ed25519.PublicKey, 0, len(secrets))
	for i, s := range secrets {
		b, err := hex.DecodeString(strings.TrimSpace(s))
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %d: want the hex of a %d-byte Ed25519 public key", i, ed25519.PublicKeySize)
		}
		keys = append(keys, ed25519.PublicKey(b))
	}
	return keys, nil
}

func validateDiscord(c Config) error {
	_, err := parseDiscordKeys(c.Secrets)
	return err
}

// discordBody is what is read of a Discord body.
type discordBody struct {
	ID    jsonText `json:"id"`
	Type  jsonText `json:"type"`
	Event *struct {
		Type jsonText `json:"type"`
	} `json:"event"`
}

func verifyDiscord(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, discordSigHeader)
	if err != nil {
		return Event{}, err
	}
	ts, err := header(r, discordTSHeader)
	if err != nil {
		return Event{}, err
	}
	sig, ok := decodeHex(h)
	if !ok || len(sig) != ed25519.SignatureSize {
		return Event{}, errMalformed(discordSigHeader + " header: want a hex Ed25519 signature")
	}
	t, err := parseUnix(ts, discordTSHeader+" header")
	if err != nil {
		return Event{}, err
	}
	if err := checkTime(c, r, t); err != nil {
		return Event{}, err
	}
	msg := make([]byte, 0, len(ts)+len(r.Body))
	msg = append(msg, ts...)
	msg = append(msg, r.Body...)
	verified := false
	for _, k := range c.ed {
		if ed25519.Verify(k, msg, sig) {
			verified = true
			break
		}
	}
	if !verified {
		return Event{}, errMismatch()
	}
	var b discordBody
	if err := decodeJSON(r.Body, &b); err != nil {
		return Event{}, err
	}
	ev, err := event(string(b.ID), discordType(b), r.Body)
	if err == nil {
		discordReply(&ev, b)
	}
	return ev, err
}

func discordType(b discordBody) string {
	if b.Event != nil && b.Event.Type != "" {
		return string(b.Event.Type)
	}
	if b.Event == nil && b.Type == "0" {
		return "ping"
	}
	if name, ok := discordInteractionTypes[string(b.Type)]; ok {
		return name
	}
	if _, err := strconv.Atoi(string(b.Type)); err == nil {
		return "interaction." + string(b.Type)
	}
	return ""
}
