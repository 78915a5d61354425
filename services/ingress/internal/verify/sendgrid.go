package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
)

// SendGrid's Signed Event Webhook signs "<timestamp><body>" with ECDSA
// P-256 over SHA-256 and sends
//
//	X-Twilio-Email-Event-Webhook-Signature: <base64 ASN.1 DER signature>
//	X-Twilio-Email-Event-Webhook-Timestamp: <unix seconds>
//
// The configured key is the verification key SendGrid shows: the base64
// of a DER (PKIX) public key. A PEM block is accepted too.
//
// A SendGrid POST is a batch of events of mixed types, each with its own
// sg_event_id, and there is no id for the batch, so the id is the body
// hash and the type is "event".

const (
	sendGridSigHeader = "X-Twilio-Email-Event-Webhook-Signature"
	sendGridTSHeader  = "X-Twilio-Email-Event-Webhook-Timestamp"
)

func parseSendGridKey(s string) (*ecdsa.PublicKey, error) {
	var der []byte
	if block, _ := pem.Decode([]byte(s)); block != nil {
		der = block.Bytes
	} else {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("not base64")
		}
		der = b
	}
	key, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("not a DER public key")
	}
	pub, ok := key.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("not an ECDSA P-256 public key")
	}
	return pub, nil
}

func parseSendGridKeys(secrets []string) ([]*ecdsa.PublicKey, error) {
	keys := make([]*ecdsa.PublicKey, 0, len(secrets))
	for i, s := range secrets {
		k, err := parseSendGridKey(s)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func validateSendGrid(c Config) error {
	_, err := parseSendGridKeys(c.Secrets)
	return err
}

func verifySendGrid(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, sendGridSigHeader)
	if err != nil {
		return Event{}, err
	}
	ts, err := header(r, sendGridTSHeader)
	if err != nil {
		return Event{}, err
	}
	sig, ok := decodeBase64(h)
	if !ok {
		return Event{}, errMalformed(sendGridSigHeader + " header: not base64")
	}
	t, err := parseUnix(ts, sendGridTSHeader+" header")
	if err != nil {
		return Event{}, err
	}
	if err := checkTime(c, r, t); err != nil {
		return Event{}, err
	}
	d := sha256.New()
	d.Write([]byte(ts))
	d.Write(r.Body)
	digest := d.Sum(nil)
	for _, k := range c.ecdsa {
		if ecdsa.VerifyASN1(k, digest, sig) {
			return event("", "event", r.Body)
		}
	}
	return Event{}, errMismatch()
}
