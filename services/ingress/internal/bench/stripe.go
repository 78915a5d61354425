package bench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// BodySize is the size of every benchmark payload. 1 KiB is a typical
// Stripe event and matches the figure the throughput target is stated for.
const BodySize = 1024

// EventType is the Stripe event type of every benchmark webhook; the
// routing key becomes "<source>.invoice.paid".
const EventType = "invoice.paid"

// Payload returns a Stripe-shaped JSON event of exactly BodySize bytes with
// the unique id "evt_<run>_<seq>". The padding lives in a string field, so
// the body stays valid JSON and the receiver parses a realistic amount of
// text.
func Payload(run string, seq int) []byte {
	head := fmt.Sprintf(`{"id":"evt_%s_%010d","object":"event","type":%q,"created":%d,"livemode":false,"data":{"object":{"object":"invoice","pad":"`,
		run, seq, EventType, time.Now().Unix())
	const tail = `"}}}`
	pad := BodySize - len(head) - len(tail)
	if pad < 0 {
		pad = 0
	}
	b := make([]byte, 0, BodySize)
	b = append(b, head...)
	b = append(b, bytes.Repeat([]byte{'x'}, pad)...)
	return append(b, tail...)
}

// StripeSignature returns the Stripe-Signature header value for body:
// "t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func StripeSignature(secret string, body []byte, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// webhookRequests builds signed webhook requests to url. Signing happens at
// send time (a few microseconds for 1 KiB) so that a long run never trips
// the receiver's timestamp tolerance; offset keeps ids unique across phases.
func webhookRequests(url, secret, run string, offset int) func(ctx context.Context, i int) (*http.Request, error) {
	return func(ctx context.Context, i int) (*http.Request, error) {
		body := Payload(run, offset+i)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("build webhook request: %w", err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", StripeSignature(secret, body, time.Now()))
		return req, nil
	}
}
