// Package ingest puts one event on the bus exactly as DESIGN.md requires:
// claim the id, publish with a broker confirm, then remember the id. The
// webhook receiver and the Publish API share it, so both follow the same
// dedupe and durability rules.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Exchange is the topic exchange every event is published to.
const Exchange = "hookyard.events"

// Errors of Ingest. Both mean "try again later", never "accepted".
var (
	// ErrUnavailable wraps a broker or Redis failure.
	ErrUnavailable = errors.New("event store unavailable")
	// ErrInProgress means the same id is being published by another
	// request right now.
	ErrInProgress = errors.New("an event with this id is being published")
	// ErrNonceReused means the request's signature was seen before on
	// another event: a replayed signature on a forged body.
	ErrNonceReused = errors.New("signature already used for another event")
)

// Event is what is published.
type Event struct {
	Tenant      string
	Source      string
	ID          string
	Type        string
	Subject     string
	ContentType string
	Body        []byte
	Time        time.Time
	// DedupeTTL is how long the id is remembered after the publish.
	DedupeTTL time.Duration
	// Nonce, if set, is bound to ID for NonceTTL; another ID with the same
	// nonce is refused (verify.Event.Nonce).
	Nonce    string
	NonceTTL time.Duration
}

// Result describes a successful Ingest.
type Result struct {
	RoutingKey string
	Duplicate  bool
}

// Publisher is the broker side; *rabbit.Publisher implements it.
type Publisher interface {
	Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error
}

// Ingester publishes events.
type Ingester struct {
	pub     Publisher
	dedupe  *dedupe.Store
	log     *slog.Logger
	confirm prometheus.Histogram
	// ConfirmTimeout bounds the wait for the broker, so a blocked broker
	// turns into a 503 the provider retries rather than a hung request.
	ConfirmTimeout time.Duration
	// Exchange is where events go: Exchange unless a test has its own.
	Exchange string
}

// New returns an Ingester.
func New(pub Publisher, d *dedupe.Store, log *slog.Logger, reg prometheus.Registerer) *Ingester {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hookyard_ingress_confirm_seconds",
		Help:    "Time from publish to broker confirm.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
	})
	reg.MustRegister(h)
	return &Ingester{pub: pub, dedupe: d, log: log, confirm: h, ConfirmTimeout: 10 * time.Second, Exchange: Exchange}
}

// RoutingKey is "<source>.<type>" with characters that would change the
// topic's word structure or break AMQP replaced.
func RoutingKey(source, typ string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '_', r == '-', r == ':', r == '/':
			return r
		}
		return '_'
	}, typ)
	return cloudevent.RoutingKey(source, strings.Trim(clean, "."))
}

// MaxRoutingKey is AMQP's limit on a routing key (a short string).
const MaxRoutingKey = 255

// Ingest publishes ev unless its id was published before.
func (i *Ingester) Ingest(ctx context.Context, ev Event) (Result, error) {
	key := RoutingKey(ev.Source, ev.Type)
	if len(key) > MaxRoutingKey {
		// The client library would fail to encode the frame and close the
		// whole connection, failing every publish in flight on it, and the
		// caller would retry an input that can never succeed.
		return Result{}, fmt.Errorf("routing key %q… is %d bytes, at most %d: the source name and event type are too long together", key[:40], len(key), MaxRoutingKey)
	}
	if ev.Nonce != "" {
		ok, err := i.dedupe.Bind(ctx, i.dedupe.Key(ev.Tenant, ev.Source, "nonce", ev.Nonce), ev.ID, ev.NonceTTL)
		if err != nil {
			return Result{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		if !ok {
			return Result{}, ErrNonceReused
		}
	}
	dk := i.dedupe.Key(ev.Tenant, ev.Source, ev.ID)
	state, claim, err := i.dedupe.Claim(ctx, dk)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	switch state {
	case dedupe.Done:
		return Result{RoutingKey: key, Duplicate: true}, nil
	case dedupe.InProgress:
		return Result{}, ErrInProgress
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id:              ev.ID,
		Source:          ev.Source,
		Type:            ev.Type,
		SpecVersion:     "1.0",
		Time:            timestamppb.New(ev.Time),
		DataContentType: ev.ContentType,
		Subject:         ev.Subject,
		Tenant:          ev.Tenant,
		Data:            ev.Body,
	})
	if err != nil {
		// The event cannot be expressed on the bus: a caller error.
		_ = i.dedupe.Release(context.WithoutCancel(ctx), claim)
		return Result{}, fmt.Errorf("encode event: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, i.ConfirmTimeout)
	defer cancel()
	start := time.Now()
	err = i.pub.Publish(pctx, i.Exchange, key, msg)
	i.confirm.Observe(time.Since(start).Seconds())
	if err != nil {
		if rerr := i.dedupe.Release(context.WithoutCancel(ctx), claim); rerr != nil {
			i.log.Warn("dedupe release failed; the claim expires by itself", "event_id", ev.ID, "err", rerr)
		}
		return Result{}, fmt.Errorf("%w: publish: %v", ErrUnavailable, err)
	}
	// The event is durable now. If remembering the id fails, a retry may
	// publish it again; consumers tolerate that, so the request succeeds.
	if err := i.dedupe.Confirm(context.WithoutCancel(ctx), claim, ev.DedupeTTL); err != nil {
		i.log.Warn("dedupe confirm failed; a retry may publish a duplicate", "event_id", ev.ID, "err", err)
	}
	return Result{RoutingKey: key}, nil
}
