// Package cloudevent maps Hookyard events to and from AMQP 0-9-1 messages
// in CloudEvents 1.0 binary content mode.
//
// The body of a message is the raw event payload, byte for byte as the
// provider sent it. The context attributes travel as message headers named
// "ce-<attribute>" with string values:
//
//	ce-specversion  "1.0"
//	ce-id           event id
//	ce-source       "/sources/<name>" (see below)
//	ce-type         provider event type, e.g. "invoice.paid"
//	ce-time         RFC 3339 with nanoseconds, UTC (omitted if unknown)
//	ce-subject      optional
//	ce-tenant       owning tenant (extension attribute)
//	ce-<ext>        further extension attributes
//
// datacontenttype travels in the content_type property rather than as a
// header, as the CloudEvents protocol bindings do for every protocol with a
// native content type. The AMQP properties message_id (= id), type (= type)
// and timestamp (= time, in seconds) are set too, so a consumer in any
// language can route, log and dedupe without parsing headers; the ce-*
// headers are authoritative when decoding.
//
// ce-source is a URI-reference in CloudEvents, while a Hookyard source is a
// bare name used in URLs and routing keys. The name "stripe" is therefore
// sent as "/sources/stripe" and the prefix is stripped when decoding. A
// source that already looks like a URI-reference (it starts with "/" or
// contains ":") is sent unchanged, and a received ce-source without the
// prefix is kept unchanged, so events from other producers survive a round
// trip.
package cloudevent

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
)

// SpecVersion is the only CloudEvents version produced and accepted.
const SpecVersion = "1.0"

// SourcePrefix turns a source name into the ce-source URI-reference.
const SourcePrefix = "/sources/"

// HeaderPrefix starts every CloudEvents attribute header.
const HeaderPrefix = "ce-"

// Header names of the attributes with a field of their own in the Event.
const (
	HeaderSpecVersion = "ce-specversion"
	HeaderID          = "ce-id"
	HeaderSource      = "ce-source"
	HeaderType        = "ce-type"
	HeaderTime        = "ce-time"
	HeaderSubject     = "ce-subject"
	HeaderTenant      = "ce-tenant"
	// HeaderDataContentType is only read, as a fallback for producers that
	// send it as a header instead of in content_type.
	HeaderDataContentType = "ce-datacontenttype"
)

// Limits that keep a decoded event bounded and an encoded one valid on the
// wire: message_id and type are AMQP short strings (at most 255 bytes).
const (
	maxShortString   = 255
	maxAttributeLen  = 4096
	maxExtensions    = 64
	maxExtensionName = 64
)

// ErrInvalid is wrapped by every error about a malformed event or message.
var ErrInvalid = errors.New("cloudevent: invalid event")

// reserved are attribute names that must not be sent as extensions: they
// have fields of their own or a fixed meaning in binary mode.
var reserved = map[string]bool{
	"specversion":     true,
	"id":              true,
	"source":          true,
	"type":            true,
	"time":            true,
	"subject":         true,
	"tenant":          true,
	"datacontenttype": true,
	"data":            true,
	"data_base64":     true,
}

// RoutingKey returns the routing key of an event on hookyard.events:
// "<source>.<type>", e.g. "stripe.invoice.paid".
func RoutingKey(source, typ string) string {
	return source + "." + typ
}

// SourceURI returns the ce-source value for a source name.
func SourceURI(source string) string {
	if strings.HasPrefix(source, "/") || strings.Contains(source, ":") {
		return source
	}
	return SourcePrefix + source
}

// SourceName returns the source name of a ce-source value.
func SourceName(uri string) string {
	if name, ok := strings.CutPrefix(uri, SourcePrefix); ok && name != "" {
		return name
	}
	return uri
}

// ToPublishing encodes ev in binary content mode. The returned Publishing
// is persistent; publish it with routing key RoutingKey(ev.Source, ev.Type).
func ToPublishing(ev *eventv1.Event) (amqp.Publishing, error) {
	if ev == nil {
		return amqp.Publishing{}, fmt.Errorf("%w: nil event", ErrInvalid)
	}
	if sv := ev.GetSpecVersion(); sv != "" && sv != SpecVersion {
		return amqp.Publishing{}, fmt.Errorf("%w: unsupported specversion %q", ErrInvalid, sv)
	}
	if err := checkRequired("id", ev.GetId(), maxShortString); err != nil {
		return amqp.Publishing{}, err
	}
	if err := checkRequired("source", ev.GetSource(), maxAttributeLen); err != nil {
		return amqp.Publishing{}, err
	}
	if err := checkRequired("type", ev.GetType(), maxShortString); err != nil {
		return amqp.Publishing{}, err
	}
	if len(ev.GetExtensions()) > maxExtensions {
		return amqp.Publishing{}, fmt.Errorf("%w: %d extensions, at most %d", ErrInvalid, len(ev.GetExtensions()), maxExtensions)
	}

	h := amqp.Table{
		HeaderSpecVersion: SpecVersion,
		HeaderID:          ev.GetId(),
		HeaderSource:      SourceURI(ev.GetSource()),
		HeaderType:        ev.GetType(),
	}
	msg := amqp.Publishing{
		Headers:      h,
		ContentType:  ev.GetDataContentType(),
		DeliveryMode: amqp.Persistent,
		MessageId:    ev.GetId(),
		Type:         ev.GetType(),
		Body:         ev.GetData(),
	}
	if len(msg.ContentType) > maxShortString {
		return amqp.Publishing{}, fmt.Errorf("%w: datacontenttype longer than %d bytes", ErrInvalid, maxShortString)
	}
	if ev.GetTime() != nil {
		if err := ev.GetTime().CheckValid(); err != nil {
			return amqp.Publishing{}, fmt.Errorf("%w: time: %w", ErrInvalid, err)
		}
		t := ev.GetTime().AsTime().UTC()
		h[HeaderTime] = t.Format(time.RFC3339Nano)
		msg.Timestamp = t
	}
	if s := ev.GetSubject(); s != "" {
		if err := checkValue("subject", s); err != nil {
			return amqp.Publishing{}, err
		}
		h[HeaderSubject] = s
	}
	if s := ev.GetTenant(); s != "" {
		if err := checkValue("tenant", s); err != nil {
			return amqp.Publishing{}, err
		}
		h[HeaderTenant] = s
	}
	for name, value := range ev.GetExtensions() {
		if err := checkExtensionName(name); err != nil {
			return amqp.Publishing{}, err
		}
		if err := checkValue(name, value); err != nil {
			return amqp.Publishing{}, err
		}
		h[HeaderPrefix+name] = value
	}
	return msg, nil
}

// FromDelivery decodes a delivery in binary content mode. It accepts
// messages from any producer: header names are matched case-insensitively,
// values may be strings, byte arrays (UTF-8) or, for extensions, numbers and
// booleans, and ce-time may also be an AMQP timestamp. Anything else is an
// error wrapping ErrInvalid; it never panics. Headers without the ce-
// prefix (x-death and the like) are ignored.
//
// Data aliases d.Body.
func FromDelivery(d amqp.Delivery) (*eventv1.Event, error) {
	return decode(d.Headers, d.ContentType, d.Body)
}

// FromPublishing decodes a message built by ToPublishing or another
// producer; see FromDelivery.
func FromPublishing(p amqp.Publishing) (*eventv1.Event, error) {
	return decode(p.Headers, p.ContentType, p.Body)
}

func decode(headers amqp.Table, contentType string, body []byte) (*eventv1.Event, error) {
	attrs := make(map[string]string)
	var evTime *timestamppb.Timestamp
	for key, raw := range headers {
		if len(key) < len(HeaderPrefix) || !strings.EqualFold(key[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		name := strings.ToLower(key[len(HeaderPrefix):])
		if _, dup := attrs[name]; dup || (name == "time" && evTime != nil) {
			return nil, fmt.Errorf("%w: attribute %q sent twice", ErrInvalid, name)
		}
		if name == "time" {
			ts, err := decodeTime(raw)
			if err != nil {
				return nil, err
			}
			evTime = ts
			continue
		}
		value, err := headerString(name, raw, !reserved[name])
		if err != nil {
			return nil, err
		}
		attrs[name] = value
	}

	if sv, ok := attrs["specversion"]; !ok {
		return nil, fmt.Errorf("%w: missing %s header (not a binary-mode CloudEvent)", ErrInvalid, HeaderSpecVersion)
	} else if sv != SpecVersion {
		return nil, fmt.Errorf("%w: unsupported specversion %q", ErrInvalid, sv)
	}
	for _, name := range []string{"id", "source", "type"} {
		if attrs[name] == "" {
			return nil, fmt.Errorf("%w: missing or empty %s%s header", ErrInvalid, HeaderPrefix, name)
		}
	}

	ev := &eventv1.Event{
		Id:              attrs["id"],
		Source:          SourceName(attrs["source"]),
		Type:            attrs["type"],
		SpecVersion:     SpecVersion,
		Time:            evTime,
		DataContentType: contentType,
		Subject:         attrs["subject"],
		Tenant:          attrs["tenant"],
		Data:            body,
	}
	if ev.DataContentType == "" {
		ev.DataContentType = attrs["datacontenttype"]
	}
	for name, value := range attrs {
		if reserved[name] {
			continue
		}
		if err := checkExtensionName(name); err != nil {
			return nil, err
		}
		if ev.Extensions == nil {
			ev.Extensions = make(map[string]string)
		}
		if len(ev.Extensions) == maxExtensions {
			return nil, fmt.Errorf("%w: more than %d extensions", ErrInvalid, maxExtensions)
		}
		ev.Extensions[name] = value
	}
	return ev, nil
}

// headerString converts a header value to an attribute string. Typed
// values are only accepted for extensions, whose CloudEvents types include
// Integer and Boolean; the core attributes are strings.
func headerString(name string, raw any, typed bool) (string, error) {
	var s string
	switch v := raw.(type) {
	case string:
		s = v
	case []byte:
		s = string(v)
	case bool:
		if !typed {
			return "", typeError(name, raw)
		}
		s = strconv.FormatBool(v)
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64:
		if !typed {
			return "", typeError(name, raw)
		}
		s = fmt.Sprint(v)
	default:
		return "", typeError(name, raw)
	}
	if err := checkValue(name, s); err != nil {
		return "", err
	}
	return s, nil
}

func decodeTime(raw any) (*timestamppb.Timestamp, error) {
	var t time.Time
	switch v := raw.(type) {
	case time.Time:
		t = v
	case string, []byte:
		s, err := headerString("time", v, false)
		if err != nil {
			return nil, err
		}
		t, err = time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s is not RFC 3339: %q", ErrInvalid, HeaderTime, truncate(s))
		}
	default:
		return nil, typeError("time", raw)
	}
	ts := timestamppb.New(t)
	if err := ts.CheckValid(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, HeaderTime, err)
	}
	return ts, nil
}

func typeError(name string, raw any) error {
	return fmt.Errorf("%w: header %s%s has unsupported type %T", ErrInvalid, HeaderPrefix, name, raw)
}

func checkRequired(name, value string, max int) error {
	if value == "" {
		return fmt.Errorf("%w: %s is required", ErrInvalid, name)
	}
	if len(value) > max {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, name, max)
	}
	if !utf8.ValidString(value) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, name)
	}
	return nil
}

func checkValue(name, value string) error {
	if len(value) > maxAttributeLen {
		return fmt.Errorf("%w: attribute %s longer than %d bytes", ErrInvalid, name, maxAttributeLen)
	}
	if !utf8.ValidString(value) {
		return fmt.Errorf("%w: attribute %s is not valid UTF-8", ErrInvalid, name)
	}
	return nil
}

// checkExtensionName enforces the CloudEvents naming rule: lower-case ASCII
// letters and digits only. It keeps header names predictable for consumers
// in other languages.
func checkExtensionName(name string) error {
	if name == "" || len(name) > maxExtensionName {
		return fmt.Errorf("%w: extension name %q must be 1-%d characters", ErrInvalid, truncate(name), maxExtensionName)
	}
	if reserved[name] {
		return fmt.Errorf("%w: extension name %q is a reserved attribute", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return fmt.Errorf("%w: extension name %q must be lower-case letters and digits", ErrInvalid, truncate(name))
		}
	}
	return nil
}

func truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
