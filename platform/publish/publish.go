// Package publish is the one way events are put on hookyard.events: the
// webhook receiver, POST /v1/events, the dispatcher's SendMessage and its
// operational events all go through it, so they share one rule set for
// ids, sources and types, one CloudEvents encoding, one dedupe keyspace and
// one durability rule.
//
// A publish claims (tenant, source, id) in Redis, publishes with a broker
// confirm, and only then remembers the id (DESIGN.md invariants 1 and 2).
// An id is therefore either answered as a duplicate or delivered; it is
// never accepted at the door and dropped later, which is why ids are
// remembered at least as long as the dispatcher keeps messages.
package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/rabbit"
)

// Limits of the rule set. They are chosen so that every field derived from
// an event fits where it goes: the AMQP routing key, message_id and type
// are short strings (255 bytes), a dispatcher message renamed to
// "<source>:<id>" (64 + 128 bytes) still fits a message_id with room for
// a task suffix, and ids travel in HTTP headers (webhook-id) and REST paths.
const (
	MaxIDLen     = 128
	MaxSourceLen = 63
	MaxTypeLen   = 200
)

// DefaultRemember is how long a published id is remembered by default: the
// dispatcher's default message retention (HOOKYARD_DISPATCHER_RETENTION).
// Remembering an id for less than the dispatcher keeps its message would
// let a reused id be accepted and then taken for a replay and dropped.
const DefaultRemember = 30 * 24 * time.Hour

// DedupePrefix starts the Redis keys of published ids. Every service that
// publishes uses it, so an id is one id whichever way it was sent. It is
// where the ingress service always kept webhook ids, under the same key
// format, so ids remembered before the services shared it still count.
const DedupePrefix = "hookyard:ingress:dedupe"

// Errors. ErrInvalid is the caller's fault (400 / InvalidArgument),
// ErrSourceNotAllowed a forged source (403 / PermissionDenied),
// ErrInProgress and ErrUnavailable mean "retry" (409 or 503 /
// Aborted or Unavailable); none of them means the event was accepted.
var (
	ErrInvalid          = errors.New("invalid event")
	ErrSourceNotAllowed = errors.New("source not allowed")
	ErrInProgress       = errors.New("an event with this id is being published; retry")
	ErrUnavailable      = errors.New("event bus unavailable")
)

// Event is one event to publish.
type Event struct {
	Tenant      string
	Source      string
	ID          string
	Type        string
	Subject     string
	ContentType string
	Body        []byte
	// Time defaults to now.
	Time time.Time
	// Remember, if longer than the publisher's, is how long this id is
	// remembered (a webhook source's dedupe window).
	Remember time.Duration
}

// Result describes a successful publish.
type Result struct {
	RoutingKey string
	// Duplicate: the id was published before; nothing was published now.
	Duplicate bool
}

// Confirmer publishes with a broker confirm; *rabbit.Publisher is one.
type Confirmer interface {
	Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error
}

// Config tunes a Publisher. The zero value is the production setting.
type Config struct {
	// Exchange is where events go (default rabbit.EventsExchange).
	Exchange string
	// ConfirmTimeout bounds the wait for the broker (default 10s), so a
	// blocked broker turns into "retry later" rather than a hung request.
	ConfirmTimeout time.Duration
	// ConfirmGrace is how much longer an answer is waited for once
	// ConfirmTimeout has passed (default DefaultConfirmGrace). After a
	// stall of the host the timeout and the broker's answer are ready
	// at once; the answer, not the timer, must decide.
	ConfirmGrace time.Duration
	// Remember is how long published ids are remembered (default
	// DefaultRemember). Keep it at least the dispatcher's retention.
	Remember time.Duration
}

// DefaultConfirmGrace is Config.ConfirmGrace's default.
const DefaultConfirmGrace = 2 * time.Second

// Publisher publishes events. It is safe for concurrent use.
type Publisher struct {
	pub       Confirmer
	ids       *dedupe.Store
	owners    *Owners
	cfg       Config
	deadlines *deadlines
	// Observe, if set, is told how long each broker confirm took.
	Observe func(time.Duration)
}

// New returns a Publisher. ids keeps the published ids (normally under
// DedupePrefix); owners, which may be nil for a publisher that only
// publishes webhooks, answers who owns a source name.
func New(pub Confirmer, ids *dedupe.Store, owners *Owners, cfg Config) *Publisher {
	if cfg.Exchange == "" {
		cfg.Exchange = rabbit.EventsExchange
	}
	if cfg.ConfirmTimeout <= 0 {
		cfg.ConfirmTimeout = 10 * time.Second
	}
	if cfg.Remember <= 0 {
		cfg.Remember = DefaultRemember
	}
	if cfg.ConfirmGrace <= 0 {
		cfg.ConfirmGrace = DefaultConfirmGrace
	}
	return &Publisher{pub: pub, ids: ids, owners: owners, cfg: cfg, deadlines: newDeadlines(cfg.ConfirmTimeout)}
}

// Remember is how long published ids are remembered.
func (p *Publisher) Remember() time.Duration { return p.cfg.Remember }

// Publish publishes a webhook's event, once per (tenant, source, id). The
// caller has established that the tenant owns the source (the receiver
// looked the source up); internal publishes use PublishInternal.
func (p *Publisher) Publish(ctx context.Context, ev Event) (Result, error) {
	m, err := Prepare(ev)
	if err != nil {
		return Result{}, err
	}
	return p.PublishPrepared(ctx, m)
}

// Prepared is an event checked and encoded, ready to publish.
type Prepared struct {
	ev  Event
	key string
	msg amqp.Publishing
}

// Prepare checks and encodes ev (see Encode), for a caller that has more
// to check before publishing it with PublishPrepared.
func Prepare(ev Event) (Prepared, error) {
	key, msg, err := Encode(ev)
	if err != nil {
		return Prepared{}, err
	}
	return Prepared{ev: ev, key: key, msg: msg}, nil
}

// PublishPrepared is Publish for an event already prepared. binds are made
// in the round trip that claims the id (dedupe.Store.Do); a refused one
// fails the publish with dedupe.ErrBound before anything is sent.
func (p *Publisher) PublishPrepared(ctx context.Context, m Prepared, binds ...dedupe.Binding) (Result, error) {
	return p.publish(ctx, m, nil, binds...)
}

// publish is PublishPrepared that also reads checks in the claim's round
// trip (dedupe.Store.DoChecked).
func (p *Publisher) publish(ctx context.Context, m Prepared, checks []dedupe.Check, binds ...dedupe.Binding) (Result, error) {
	ev, key, msg := m.ev, m.key, m.msg
	if key == "" {
		return Result{}, fmt.Errorf("%w: event not prepared", ErrInvalid)
	}
	remember := max(p.cfg.Remember, ev.Remember)
	state, err := p.ids.DoChecked(ctx, IDKey(p.ids, ev.Tenant, ev.Source, ev.ID), remember, checks, func(ctx context.Context) error {
		return p.confirm(ctx, key, msg)
	}, binds...)
	switch {
	case errors.Is(err, dedupe.ErrInProgress):
		return Result{}, ErrInProgress
	case errors.Is(err, dedupe.ErrStore):
		return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case err != nil:
		return Result{}, err
	}
	return Result{RoutingKey: key, Duplicate: state == dedupe.Done}, nil
}

// PublishInternal publishes an event a tenant's own services send (POST
// /v1/events, SendMessage): as Publish, after checking that the source is
// one the tenant may publish under (see CheckSource).
func (p *Publisher) PublishInternal(ctx context.Context, ev Event) (Result, error) {
	// The input is checked before Redis is asked who owns the source.
	m, err := Prepare(ev)
	if err != nil {
		return Result{}, err
	}
	if p.owners != nil && p.owners.rdb != p.ids.Redis() {
		// The owner lives in another Redis: a round trip of its own.
		if err := p.owners.CheckSource(ctx, ev.Tenant, ev.Source); err != nil {
			return Result{}, err
		}
		return p.PublishPrepared(ctx, m)
	}
	check, err := p.owners.sourceCheck(ev.Tenant, ev.Source)
	if err != nil {
		return Result{}, err
	}
	if check == nil {
		return p.PublishPrepared(ctx, m)
	}
	// The owner is read in the round trip of the id's claim.
	return p.publish(ctx, m, []dedupe.Check{*check})
}

// Emit publishes an event that needs no dedupe because its id is fresh (an
// operational event with a new UUID): encode, then publish with confirm.
func (p *Publisher) Emit(ctx context.Context, ev Event) error {
	key, msg, err := Encode(ev)
	if err != nil {
		return err
	}
	err = p.confirm(ctx, key, msg)
	var pending *dedupe.Pending
	if errors.As(err, &pending) {
		// Nothing follows the answer of an event without an id claim.
		go func() {
			wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = pending.Wait(wctx)
		}()
	}
	return err
}

// sender is a Confirmer that can send first and wait after
// (*rabbit.Publisher).
type sender interface {
	SendUntil(ctx context.Context, stop <-chan struct{}, exchange, key string, msg amqp.Publishing) (*rabbit.Confirmation, error)
}

// confirm publishes msg and waits for the broker's answer, at most
// ConfirmTimeout plus ConfirmGrace. If there is none by then, the message
// may still be stored: the error is a *dedupe.Pending wrapping
// ErrUnavailable, so that the id's claim follows the broker's answer
// instead of being given back while the message goes through.
func (p *Publisher) confirm(ctx context.Context, key string, msg amqp.Publishing) error {
	s, ok := p.pub.(sender)
	if !ok {
		ctx, cancel := context.WithTimeout(ctx, p.cfg.ConfirmTimeout)
		defer cancel()
		start := time.Now()
		err := p.pub.Publish(ctx, p.cfg.Exchange, key, msg)
		p.observe(start)
		return classify(err)
	}
	start := time.Now()
	deadline := p.deadlines.after()
	c, err := s.SendUntil(ctx, deadline, p.cfg.Exchange, key, msg)
	if err != nil {
		p.observe(start)
		return classify(err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
	case <-deadline:
		grace := time.NewTimer(p.cfg.ConfirmGrace)
		select {
		case <-c.Done():
		case <-ctx.Done():
		case <-grace.C:
		}
		grace.Stop()
	}
	p.observe(start)
	select {
	case <-c.Done():
		return classify(c.Result(ctx))
	default:
	}
	why := ctx.Err()
	if why == nil {
		why = fmt.Errorf("no confirm within %s", p.cfg.ConfirmTimeout+p.cfg.ConfirmGrace)
	}
	return &dedupe.Pending{
		Err: fmt.Errorf("%w: waiting for the broker's confirm: %w", ErrUnavailable, why),
		Wait: func(wctx context.Context) error {
			select {
			case <-c.Done():
				return c.Result(wctx)
			case <-wctx.Done():
				c.Abandon()
				return wctx.Err()
			}
		},
	}
}

func (p *Publisher) observe(start time.Time) {
	if p.Observe != nil {
		p.Observe(time.Since(start))
	}
}

func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rabbit.ErrUnencodable):
		// Encode checks every field, so this is a bug, not a retry.
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// IDKey is the Redis key remembering (tenant, source, id) in ids.
func IDKey(ids *dedupe.Store, tenant, source, id string) string {
	return ids.Key(tenant, source, id)
}

// Encode checks ev against the rule set and encodes it as a CloudEvent in
// binary content mode, returning its routing key and message. Every field
// of the result fits AMQP; errors wrap ErrInvalid.
func Encode(ev Event) (string, amqp.Publishing, error) {
	if ev.Tenant == "" {
		return "", amqp.Publishing{}, fmt.Errorf("%w: tenant is required", ErrInvalid)
	}
	if err := ValidSource(ev.Source); err != nil {
		return "", amqp.Publishing{}, err
	}
	if err := ValidID(ev.ID); err != nil {
		return "", amqp.Publishing{}, err
	}
	if err := ValidType(ev.Type); err != nil {
		return "", amqp.Publishing{}, err
	}
	key := RoutingKey(ev.Source, ev.Type)
	if len(key) > rabbit.MaxShortString {
		return "", amqp.Publishing{}, fmt.Errorf("%w: routing key %q… is %d bytes, at most %d: the source name and event type are too long together", ErrInvalid, key[:40], len(key), rabbit.MaxShortString)
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id:              ev.ID,
		Source:          ev.Source,
		Type:            ev.Type,
		SpecVersion:     cloudevent.SpecVersion,
		Time:            timestamppb.New(ev.Time),
		DataContentType: ev.ContentType,
		Subject:         ev.Subject,
		Tenant:          ev.Tenant,
		Data:            ev.Body,
	})
	if err != nil {
		return "", amqp.Publishing{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := rabbit.CheckPublishing("", key, msg); err != nil {
		return "", amqp.Publishing{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return key, msg, nil
}

// ValidID checks an event id: 1 to MaxIDLen bytes of printable ASCII, no
// spaces and no '/'. Ids become AMQP message ids, the webhook-id header of
// every delivery and a path segment of GET /v1/messages/{id}; a CR or LF
// would break the header, a '/' the path.
func ValidID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: id is required", ErrInvalid)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: id is %d bytes, at most %d", ErrInvalid, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '/' {
			return fmt.Errorf("%w: id may contain only printable ASCII characters other than space and '/' (byte %d is %q)", ErrInvalid, i, c)
		}
	}
	return nil
}

// ValidSource checks a source name: 1 to MaxSourceLen lower-case letters,
// digits, '-' or '_', starting with a letter or digit, as webhook sources
// are named. It is the first word of the routing key, so it has no dots.
func ValidSource(s string) error {
	ok := s != "" && len(s) <= MaxSourceLen
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_')
	}
	if !ok {
		return fmt.Errorf("%w: source %q: use 1-%d lower-case letters, digits, '-' or '_', starting with a letter or digit", ErrInvalid, truncate(s), MaxSourceLen)
	}
	return nil
}

// ValidType checks an event type: 1 to MaxTypeLen bytes of UTF-8 without
// control characters. It travels unchanged as ce-type; the routing key
// carries a cleaned copy (see RoutingKey).
func ValidType(t string) error {
	if t == "" {
		return fmt.Errorf("%w: type is required, e.g. invoice.paid", ErrInvalid)
	}
	if len(t) > MaxTypeLen {
		return fmt.Errorf("%w: type is %d bytes, at most %d", ErrInvalid, len(t), MaxTypeLen)
	}
	if !utf8.ValidString(t) {
		return fmt.Errorf("%w: type is not valid UTF-8", ErrInvalid)
	}
	for _, r := range t {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: type contains a control character", ErrInvalid)
		}
	}
	return nil
}

// RoutingKey is "<source>.<type>" with every character of the type other
// than ASCII letters, digits and . _ : / - replaced by '_' (so a type
// cannot add topic wildcards or change the key's words) and leading or
// trailing dots trimmed.
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

func truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
