package rabbit

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// MaxShortString is AMQP's limit on a short string: exchange names,
// routing keys, header names and the string properties of a message.
const MaxShortString = 255

// maxHeaderDepth bounds nested header tables and arrays.
const maxHeaderDepth = 16

// CheckPublishing reports, wrapping ErrUnencodable, why msg could not be
// published to exchange with routing key key: a short string over 255
// bytes or a header value of a type AMQP has no encoding for. The client
// library would find out only while writing the frame, and then shut the
// whole connection down.
func CheckPublishing(exchange, key string, msg amqp.Publishing) error {
	for _, f := range []struct{ name, value string }{
		{"exchange", exchange},
		{"routing key", key},
		{"content_type", msg.ContentType},
		{"content_encoding", msg.ContentEncoding},
		{"correlation_id", msg.CorrelationId},
		{"reply_to", msg.ReplyTo},
		{"expiration", msg.Expiration},
		{"message_id", msg.MessageId},
		{"type", msg.Type},
		{"user_id", msg.UserId},
		{"app_id", msg.AppId},
	} {
		if len(f.value) > MaxShortString {
			return fmt.Errorf("%w: %s is %d bytes, at most %d", ErrUnencodable, f.name, len(f.value), MaxShortString)
		}
	}
	return checkTable(msg.Headers, 0)
}

func checkTable(t amqp.Table, depth int) error {
	if depth > maxHeaderDepth {
		return fmt.Errorf("%w: headers nested deeper than %d", ErrUnencodable, maxHeaderDepth)
	}
	for k, v := range t {
		if len(k) > MaxShortString {
			return fmt.Errorf("%w: header name %q… is %d bytes, at most %d", ErrUnencodable, truncate(k), len(k), MaxShortString)
		}
		if err := checkField(k, v, depth); err != nil {
			return err
		}
	}
	return nil
}

// checkField accepts exactly the types the client library can write.
func checkField(name string, v any, depth int) error {
	switch fv := v.(type) {
	case nil, bool, byte, int8, int16, int, int32, int64, uint16, uint32, float32, float64,
		amqp.Decimal, string, []byte, time.Time:
		return nil
	case amqp.Table:
		return checkTable(fv, depth+1)
	case []any:
		if depth+1 > maxHeaderDepth {
			return fmt.Errorf("%w: headers nested deeper than %d", ErrUnencodable, maxHeaderDepth)
		}
		for _, e := range fv {
			if err := checkField(name, e, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%w: header %q has unsupported type %T", ErrUnencodable, truncate(name), v)
}

func truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n]
}
