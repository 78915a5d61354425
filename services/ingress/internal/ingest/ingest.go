// Package ingest is the ingress service's door to the shared publisher
// (platform/publish): the webhook receiver and the Publish API hand it
// their events, so both follow the same id rules, dedupe and durability
// rules as every other service publishing onto hookyard.events. What is
// the ingress's own is the signature-nonce check of webhooks.
package ingest

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/prometheus/client_golang/prometheus"
)

// Exchange is the topic exchange every event is published to.
const Exchange = rabbit.EventsExchange

// Errors of Ingest. ErrUnavailable and ErrInProgress mean "try again
// later", never "accepted"; ErrInvalid and ErrSourceNotAllowed are the
// caller's fault.
var (
	ErrUnavailable      = publish.ErrUnavailable
	ErrInProgress       = publish.ErrInProgress
	ErrInvalid          = publish.ErrInvalid
	ErrSourceNotAllowed = publish.ErrSourceNotAllowed
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
	// DedupeTTL is how long the id is remembered after the publish, if
	// longer than the publisher's own memory (publish.DefaultRemember).
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
type Publisher = publish.Confirmer

// Ingester publishes events. Set its exported fields before the first
// Ingest.
type Ingester struct {
	pub     Publisher
	dedupe  *dedupe.Store
	log     *slog.Logger
	confirm prometheus.Histogram
	// ConfirmTimeout bounds the wait for the broker, so a blocked broker
	// turns into a 503 the provider retries rather than a hung request.
	ConfirmTimeout time.Duration
	// ConfirmGrace is how much longer an answer is waited for after
	// ConfirmTimeout (default publish.DefaultConfirmGrace).
	ConfirmGrace time.Duration
	// Exchange is where events go: Exchange unless a test has its own.
	Exchange string
	// Remember is how long published ids are remembered (default
	// publish.DefaultRemember, the dispatcher's default retention).
	Remember time.Duration
	// Owners answers who owns a source name, for IngestInternal. Nil
	// refuses only the names reserved without a lookup.
	Owners *publish.Owners

	once sync.Once
	p    *publish.Publisher
}

// New returns an Ingester. d keeps the published ids; in production it is
// under publish.DedupePrefix, shared with the dispatcher's SendMessage.
func New(pub Publisher, d *dedupe.Store, log *slog.Logger, reg prometheus.Registerer) *Ingester {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hookyard_ingress_confirm_seconds",
		Help:    "Time from publish to broker confirm.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
	})
	reg.MustRegister(h)
	if d.Log == nil {
		d.Log = log
	}
	return &Ingester{pub: pub, dedupe: d, log: log, confirm: h, ConfirmTimeout: 10 * time.Second, Exchange: Exchange}
}

// RoutingKey is "<source>.<type>" with characters that would change the
// topic's word structure or break AMQP replaced (publish.RoutingKey).
func RoutingKey(source, typ string) string { return publish.RoutingKey(source, typ) }

// MaxRoutingKey is AMQP's limit on a routing key (a short string).
const MaxRoutingKey = rabbit.MaxShortString

// publisher is built on first use, once the exported fields are set.
func (i *Ingester) publisher() *publish.Publisher {
	i.once.Do(func() {
		i.p = publish.New(i.pub, i.dedupe, i.Owners, publish.Config{
			Exchange: i.Exchange, ConfirmTimeout: i.ConfirmTimeout, ConfirmGrace: i.ConfirmGrace, Remember: i.Remember,
		})
		i.p.Observe = func(d time.Duration) { i.confirm.Observe(d.Seconds()) }
	})
	return i.p
}

func (ev Event) event() publish.Event {
	return publish.Event{
		Tenant: ev.Tenant, Source: ev.Source, ID: ev.ID, Type: ev.Type, Subject: ev.Subject,
		ContentType: ev.ContentType, Body: ev.Body, Time: ev.Time, Remember: ev.DedupeTTL,
	}
}

// Ingest publishes a webhook's event unless its id was published before.
// The caller looked the source up, so the tenant owns it.
func (i *Ingester) Ingest(ctx context.Context, ev Event) (Result, error) {
	// Refuse what can never be published before binding the nonce to it.
	m, err := publish.Prepare(ev.event())
	if err != nil {
		return Result{}, err
	}
	// The nonce is bound in the round trip that claims the id.
	var binds []dedupe.Binding
	if ev.Nonce != "" {
		binds = []dedupe.Binding{{Key: i.dedupe.Key(ev.Tenant, ev.Source, "nonce", ev.Nonce), Value: ev.ID, TTL: ev.NonceTTL}}
	}
	res, err := i.publisher().PublishPrepared(ctx, m, binds...)
	if errors.Is(err, dedupe.ErrBound) {
		return Result{}, ErrNonceReused
	}
	return Result(res), err
}

// IngestInternal publishes an event a tenant's own service sent (POST
// /v1/events): as Ingest, after checking the tenant may use the source.
func (i *Ingester) IngestInternal(ctx context.Context, ev Event) (Result, error) {
	res, err := i.publisher().PublishInternal(ctx, ev.event())
	return Result(res), err
}
