package cloudevent

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"
)

// fuzzValue turns fuzz input into a header value of a type chosen by kind,
// covering every type the AMQP library can decode from the wire.
func fuzzValue(kind byte, s string) any {
	switch kind % 12 {
	case 0, 1, 2:
		return s
	case 3:
		return []byte(s)
	case 4:
		return int64(len(s))
	case 5:
		return len(s)%2 == 0
	case 6:
		return time.Unix(int64(len(s))*1e9, 0)
	case 7:
		return float64(len(s)) / 3
	case 8:
		return nil
	case 9:
		return amqp.Table{s: s}
	case 10:
		return []any{s, int32(1)}
	default:
		return amqp.Decimal{Scale: uint8(len(s)), Value: 7}
	}
}

// FuzzFromDelivery feeds the decoder arbitrary header names, values and
// value types. The decoder must never panic, must only fail with
// ErrInvalid, and whatever it accepts must encode and decode back to the
// same event.
func FuzzFromDelivery(f *testing.F) {
	f.Add("1.0", "id-1", "/sources/stripe", "invoice.paid", "2024-01-02T03:04:05.5Z", "ce-traceparent", "00-ab", byte(0), byte(0), []byte(`{"a":1}`))
	f.Add("1.0", "x", "urn:a", "t", "2024-01-02T03:04:05+02:00", "CE-TENANT", "acme", byte(3), byte(4), []byte{})
	f.Add("0.3", "", "", "", "", "", "", byte(6), byte(9), []byte(nil))
	f.Add("1.0", "id", "/sources/", "t", "not a time", "ce-", "", byte(1), byte(11), []byte{0xff})

	f.Fuzz(func(t *testing.T, specversion, id, source, typ, tm, extKey, extVal string, kindA, kindB byte, body []byte) {
		h := amqp.Table{
			"ce-specversion": fuzzValue(kindA>>4, specversion),
			"ce-id":          fuzzValue(kindA, id),
			"ce-source":      source,
			"ce-type":        fuzzValue(kindB>>4, typ),
			"ce-time":        fuzzValue(kindB, tm),
		}
		if extKey != "" {
			h[extKey] = fuzzValue(kindA^kindB, extVal)
		}
		ev, err := FromDelivery(amqp.Delivery{Headers: h, Body: body, ContentType: "application/json"})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if ev.Id == "" || ev.Source == "" || ev.Type == "" || ev.SpecVersion != SpecVersion {
			t.Fatalf("accepted incomplete event %v", ev)
		}
		msg, err := ToPublishing(ev)
		if err != nil {
			// The decoder is more lenient than the encoder on lengths
			// (message_id and type are AMQP short strings); that is the
			// only acceptable reason to refuse a decoded event.
			if len(ev.Id) > maxShortString || len(ev.Type) > maxShortString || len(ev.DataContentType) > maxShortString {
				return
			}
			t.Fatalf("decoded event does not encode: %v\n%v", err, ev)
		}
		if err := msg.Headers.Validate(); err != nil {
			t.Fatalf("encoded headers invalid: %v", err)
		}
		again, err := FromPublishing(msg)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !proto.Equal(ev, again) {
			t.Fatalf("round trip changed event:\n%v\n%v", ev, again)
		}
	})
}
