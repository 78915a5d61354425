package verify

import "crypto/sha256"

// Shopify signs the body with HMAC-SHA256 under the app's client secret
// and sends the base64 MAC in X-Shopify-Hmac-Sha256. There is no signed
// timestamp.
//
// The id is X-Shopify-Webhook-Id, which Shopify keeps across retries of
// one delivery, falling back to X-Shopify-Event-Id; the type is
// X-Shopify-Topic ("orders/create").

const (
	shopifySigHeader     = "X-Shopify-Hmac-Sha256"
	shopifyWebhookHeader = "X-Shopify-Webhook-Id"
	shopifyEventHeader   = "X-Shopify-Event-Id"
	shopifyTopicHeader   = "X-Shopify-Topic"
)

func verifyShopify(c *compiled, r Request) (Event, *Error) {
	h, err := header(r, shopifySigHeader)
	if err != nil {
		return Event{}, err
	}
	sig, ok := decodeBase64(h)
	if !ok {
		return Event{}, errMalformed(shopifySigHeader + " header: not base64")
	}
	if _, ok := matchHMAC(c.raw, sha256.New, [][]byte{sig}, r.Body); !ok {
		return Event{}, errMismatch()
	}
	id, err := optionalHeader(r, shopifyWebhookHeader)
	if err != nil {
		return Event{}, err
	}
	if id == "" {
		if id, err = optionalHeader(r, shopifyEventHeader); err != nil {
			return Event{}, err
		}
	}
	topic, err := optionalHeader(r, shopifyTopicHeader)
	if err != nil {
		return Event{}, err
	}
	ev, verr := event(id, topic, r.Body)
	ev.Nonce = signatureNonce("shopify", sig)
	return ev, verr
}
