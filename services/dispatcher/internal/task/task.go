// Package task is the dispatcher's task protocol: a task is one (message,
// endpoint) pair travelling on the deliveries queue; retries and deferrals
// travel through TTL delay queues back to the same queue, so a pending
// retry lives in RabbitMQ (replicated, on disk) and never in a
// dispatcher's memory. The fan-out and the API publish tasks through this
// package; the worker (package deliver) consumes them.
package task

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Task header names. The body of a task is the event body, unchanged.
const (
	HeaderTenant    = "hy-tenant"
	HeaderMessage   = "hy-message"
	HeaderEndpoint  = "hy-endpoint"
	HeaderAttempt   = "hy-attempt"
	HeaderKey       = "hy-key"
	HeaderNotBefore = "hy-not-before"
	HeaderEventTime = "hy-event-time"
	HeaderDeferrals = "hy-deferrals"
	HeaderDelivered = "hy-delivered"
	HeaderBefore    = "hy-before"
	HeaderCopy      = "hy-copy"
)

// Task is one message to deliver to one endpoint.
type Task struct {
	Tenant   string
	Message  string
	Endpoint string
	Attempts int // attempts already made
	// Before counts the attempts of earlier sends of the delivery (a
	// resend starts the retry schedule again, not the attempt count).
	Before      int
	Deferrals   int // times put back without an attempt since the last one
	RoutingKey  string
	ContentType string
	EventTime   time.Time
	NotBefore   time.Time // zero: now
	// Delivered: the subscriber accepted the message, but writing that
	// down failed; the task only records it.
	Delivered bool
	// Copy tells apart the copies of a task that the delivery worker
	// publishes (each retry, deferral or put-back gets a fresh one), so
	// that the worker can tell the copy that made an attempt from another
	// one (see deliver.Worker). Tasks published by the fan-out and the API
	// have none.
	Copy string
	Body []byte
}

// ID identifies the task on the broker (its AMQP message id): a digest of
// tenant, message and endpoint, always 64 bytes. An AMQP message id is a
// short string of at most 255 bytes and an event id alone may be 255
// bytes; a longer id fails to encode and closes the shared connection.
// The ids themselves travel in the headers.
func (t *Task) ID() string {
	h := sha256.New()
	for _, s := range []string{t.Tenant, t.Message, t.Endpoint} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Publishing encodes t for the deliveries or a delay queue.
func (t *Task) Publishing() amqp.Publishing {
	h := amqp.Table{
		HeaderTenant:   t.Tenant,
		HeaderMessage:  t.Message,
		HeaderEndpoint: t.Endpoint,
		HeaderAttempt:  int32(t.Attempts),
		HeaderKey:      t.RoutingKey,
	}
	if t.Deferrals > 0 {
		h[HeaderDeferrals] = int32(t.Deferrals)
	}
	if t.Before > 0 {
		h[HeaderBefore] = int32(t.Before)
	}
	if t.Delivered {
		h[HeaderDelivered] = true
	}
	if t.Copy != "" {
		h[HeaderCopy] = t.Copy
	}
	if !t.NotBefore.IsZero() {
		h[HeaderNotBefore] = t.NotBefore.UnixMilli()
	}
	if !t.EventTime.IsZero() {
		h[HeaderEventTime] = t.EventTime.UnixMilli()
	}
	return amqp.Publishing{
		Headers:      h,
		ContentType:  t.ContentType,
		DeliveryMode: amqp.Persistent,
		MessageId:    t.ID(),
		Body:         t.Body,
	}
}

// Total is the number of attempts made at the delivery in all its sends.
func (t *Task) Total() int { return t.Before + t.Attempts }

// ErrBadTask marks a task that cannot be decoded; it goes to the DLQ.
var ErrBadTask = errors.New("malformed delivery task")

// Decode reads a task from a delivery.
func Decode(d amqp.Delivery) (*Task, error) {
	str := func(name string) (string, error) {
		v, ok := d.Headers[name].(string)
		if !ok || v == "" {
			return "", fmt.Errorf("%w: header %s missing", ErrBadTask, name)
		}
		return v, nil
	}
	var t Task
	var err error
	if t.Tenant, err = str(HeaderTenant); err != nil {
		return nil, err
	}
	if t.Message, err = str(HeaderMessage); err != nil {
		return nil, err
	}
	if t.Endpoint, err = str(HeaderEndpoint); err != nil {
		return nil, err
	}
	t.RoutingKey, _ = d.Headers[HeaderKey].(string)
	n, ok := intHeader(d.Headers[HeaderAttempt])
	if !ok || n < 0 {
		return nil, fmt.Errorf("%w: header %s missing or invalid", ErrBadTask, HeaderAttempt)
	}
	t.Attempts = int(n)
	if ms, ok := intHeader(d.Headers[HeaderNotBefore]); ok {
		t.NotBefore = time.UnixMilli(ms)
	}
	if n, ok := intHeader(d.Headers[HeaderDeferrals]); ok && n > 0 {
		t.Deferrals = int(n)
	}
	if n, ok := intHeader(d.Headers[HeaderBefore]); ok && n > 0 {
		t.Before = int(n)
	}
	if ms, ok := intHeader(d.Headers[HeaderEventTime]); ok {
		t.EventTime = time.UnixMilli(ms)
	}
	t.Delivered, _ = d.Headers[HeaderDelivered].(bool)
	t.Copy, _ = d.Headers[HeaderCopy].(string)
	t.ContentType = d.ContentType
	t.Body = d.Body
	return &t, nil
}

func intHeader(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	}
	return 0, false
}
