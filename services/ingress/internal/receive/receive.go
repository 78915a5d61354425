// Package receive is the webhook receiver, POST /webhooks/{source}: look up
// the source, read the body under a cap, verify it over the exact bytes,
// answer provider handshakes, and hand the event to ingest. It answers 2xx
// only once the event is confirmed by the broker (or known to be), 4xx with
// a reason for every bad request, and 503 with Retry-After when the broker
// or Redis is down so the provider retries.
package receive

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/tally"
	"github.com/hookyard/hookyard/services/ingress/internal/ingest"
	"github.com/hookyard/hookyard/services/ingress/internal/source"
	"github.com/hookyard/hookyard/services/ingress/internal/verify"
	"github.com/prometheus/client_golang/prometheus"
)

// Handler serves POST /webhooks/{source}.
type Handler struct {
	sources *source.Store
	ingest  *ingest.Ingester
	log     *slog.Logger
	m       *metrics
	now     func() time.Time

	// Bodies, when set, is the server's budget for request bodies in
	// flight; the webhook body is read under it as REST bodies are.
	Bodies *server.BodyBudget
	// Stats, when set, counts each source's webhooks for ListSourceStats.
	Stats *tally.Tally
}

// New returns a Handler whose metrics are registered on reg.
func New(sources *source.Store, in *ingest.Ingester, log *slog.Logger, reg prometheus.Registerer) *Handler {
	return &Handler{sources: sources, ingest: in, log: log, m: newMetrics(reg), now: time.Now}
}

type reply struct {
	ID        string `json:"id,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Error     string `json:"error,omitempty"`
}

func write(w http.ResponseWriter, code int, r reply) {
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(code)
	if r.Error == "" && plain(r.ID) {
		// The answer to every accepted webhook: the bytes the encoder
		// would write, without its reflection and allocations.
		b := make([]byte, 0, len(r.ID)+32)
		b = append(b, `{"id":"`...)
		b = append(b, r.ID...)
		if r.Duplicate {
			b = append(b, `","duplicate":true}`...)
		} else {
			b = append(b, `"}`...)
		}
		_, _ = w.Write(append(b, '\n'))
		return
	}
	_ = json.NewEncoder(w).Encode(r)
}

var jsonType = []string{"application/json"}

// plain reports whether s is non-empty and needs no escaping in JSON
// (encoding/json escapes <, > and & too).
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return s != ""
}

func (h *Handler) reject(w http.ResponseWriter, name, reason string, code int, msg string) {
	h.m.rejected.WithLabelValues(reason).Inc()
	switch code {
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "5")
	case http.StatusConflict:
		w.Header().Set("Retry-After", "1")
	}
	h.log.Info("webhook rejected", "source", name, "status", code, "reason", msg)
	write(w, code, reply{Error: msg})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("source")
	now := h.now()
	if !source.ValidName(name) {
		h.reject(w, "", "unknown_source", http.StatusNotFound, "unknown source")
		return
	}
	rec, err := h.sources.Lookup(ctx, name)
	if errors.Is(err, source.ErrNotFound) {
		h.reject(w, name, "unknown_source", http.StatusNotFound, "unknown source")
		return
	}
	if err != nil {
		h.log.WarnContext(ctx, "source lookup failed", "source", name, "err", err)
		h.reject(w, name, "unavailable", http.StatusServiceUnavailable, "temporarily unavailable")
		return
	}
	pm := h.m.provider(rec.Source.GetProvider())
	pm.received.Inc()
	h.count(rec, source.CountReceived)

	limit := source.MaxBody(rec.Source)
	if r.ContentLength > limit {
		h.refuse(w, rec, "too_large", http.StatusRequestEntityTooLarge, "body larger than the source's limit")
		return
	}
	body, release, err := h.readBody(w, r, limit)
	defer release()
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig), errors.Is(err, server.ErrBodyTooLarge):
			h.refuse(w, rec, "too_large", http.StatusRequestEntityTooLarge, "body larger than the source's limit")
		case errors.Is(err, server.ErrBodyBusy):
			h.refuse(w, rec, "busy", http.StatusServiceUnavailable, "too many requests in flight; retry later")
		default:
			h.refuse(w, rec, "read_error", http.StatusBadRequest, "could not read body")
		}
		return
	}
	h.m.bodyBytes.Observe(float64(len(body)))

	if rec.Verifier == nil {
		h.log.ErrorContext(ctx, "source does not compile", "source", name, "err", rec.VerifyErr)
		h.refuse(w, rec, "misconfigured", http.StatusInternalServerError, "source misconfigured")
		return
	}
	start := time.Now()
	ev, err := rec.Verifier.Verify(verify.Request{Header: r.Header, Body: body, Now: now})
	pm.verify.Observe(time.Since(start).Seconds())
	if err != nil {
		var ve *verify.Error
		if !errors.As(err, &ve) {
			ve = &verify.Error{Status: http.StatusUnauthorized, Reason: "verification failed"}
		}
		reason := "bad_signature"
		if ve.Status == http.StatusBadRequest {
			reason = "malformed"
		}
		h.count(rec, source.CountVerificationFailure)
		h.reject(w, name, reason, ve.Status, ve.Reason)
		return
	}
	if ev.Reply != nil {
		pm.handshakes.Inc()
		h.count(rec, source.CountAccepted)
		w.Header().Set("Content-Type", ev.ReplyType)
		_, _ = w.Write(ev.Reply)
		return
	}

	ctype := r.Header.Get("Content-Type")
	if len(ctype) > 200 {
		ctype = ""
	}
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	res, err := h.ingest.Ingest(ctx, ingest.Event{
		Tenant:      rec.Tenant,
		Source:      name,
		ID:          ev.ID,
		Type:        ev.Type,
		ContentType: ctype,
		Body:        body,
		Time:        now,
		DedupeTTL:   source.DedupeWindow(rec.Source),
		Nonce:       ev.Nonce,
		NonceTTL:    nonceTTL(ev.Timed, source.Tolerance(rec.Source), source.DedupeWindow(rec.Source)),
	})
	switch {
	case errors.Is(err, ingest.ErrNonceReused):
		h.count(rec, source.CountVerificationFailure)
		h.reject(w, name, "replayed_signature", http.StatusUnauthorized, "signature already used for another event")
		return
	case errors.Is(err, ingest.ErrInProgress):
		h.refuse(w, rec, "in_progress", http.StatusConflict, "an event with this id is being processed; retry")
		return
	case errors.Is(err, ingest.ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		h.log.WarnContext(ctx, "publish failed", "source", name, "event_id", ev.ID, "err", err)
		h.refuse(w, rec, "unavailable", http.StatusServiceUnavailable, "temporarily unavailable")
		return
	case err != nil:
		h.refuse(w, rec, "malformed", http.StatusBadRequest, err.Error())
		return
	}
	if res.Duplicate {
		pm.duplicates.Inc()
		h.count(rec, source.CountDuplicate)
		h.log.InfoContext(ctx, "webhook duplicate", "source", name, "event_id", ev.ID, "routing_key", res.RoutingKey)
		write(w, http.StatusOK, reply{ID: ev.ID, Duplicate: true})
		return
	}
	pm.accepted.Inc()
	h.count(rec, source.CountAccepted)
	// Checked first: building the arguments allocates on every webhook even
	// when info logs are off.
	if h.log.Enabled(ctx, slog.LevelInfo) {
		h.log.InfoContext(ctx, "webhook accepted", "source", name, "tenant", rec.Tenant, "event_id", ev.ID, "routing_key", res.RoutingKey, "bytes", len(body))
	}
	write(w, http.StatusAccepted, reply{ID: ev.ID})
}

// count adds one to a counter of the source's webhooks, if counting.
func (h *Handler) count(rec *source.Record, counter string) {
	if h.Stats != nil {
		key := rec.StatsKey
		if key == "" {
			key = h.sources.StatsKey(rec.Tenant)
		}
		h.Stats.Add(key, rec.Source.GetName(), counter, 1)
	}
}

// refuse is reject for a webhook of a known source, counted as refused
// for a reason other than its signature.
func (h *Handler) refuse(w http.ResponseWriter, rec *source.Record, reason string, code int, msg string) {
	h.count(rec, source.CountOtherRejected)
	h.reject(w, rec.Source.GetName(), reason, code, msg)
}

// readBody reads the body under limit and, when set, the body budget.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, func(), error) {
	if h.Bodies != nil {
		return h.Bodies.Read(w, r, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	return body, func() {}, err
}

type metrics struct {
	received, accepted, duplicates, handshakes *prometheus.CounterVec
	rejected                                   *prometheus.CounterVec
	bodyBytes                                  prometheus.Histogram
	verify                                     *prometheus.HistogramVec

	providers sync.Map // provider name -> *providerMetrics
}

// providerMetrics are one provider's series, looked up once: a lookup by
// label hashes the label values, and a webhook counts three series.
type providerMetrics struct {
	received, accepted, duplicates, handshakes prometheus.Counter
	verify                                     prometheus.Observer
}

func (m *metrics) provider(name string) *providerMetrics {
	if pm, ok := m.providers.Load(name); ok {
		return pm.(*providerMetrics)
	}
	pm, _ := m.providers.LoadOrStore(name, &providerMetrics{
		received:   m.received.WithLabelValues(name),
		accepted:   m.accepted.WithLabelValues(name),
		duplicates: m.duplicates.WithLabelValues(name),
		handshakes: m.handshakes.WithLabelValues(name),
		verify:     m.verify.WithLabelValues(name),
	})
	return pm.(*providerMetrics)
}

func newMetrics(reg prometheus.Registerer) *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	m := &metrics{
		received:   counter("hookyard_ingress_received_total", "Webhooks received for a known source, by provider.", "provider"),
		accepted:   counter("hookyard_ingress_accepted_total", "Webhooks published and confirmed, by provider.", "provider"),
		duplicates: counter("hookyard_ingress_duplicates_total", "Replays answered without publishing, by provider.", "provider"),
		handshakes: counter("hookyard_ingress_handshakes_total", "Provider handshakes answered, by provider.", "provider"),
		rejected:   counter("hookyard_ingress_rejected_total", "Webhooks refused, by reason.", "reason"),
		bodyBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hookyard_ingress_body_bytes", Help: "Size of received bodies.",
			Buckets: prometheus.ExponentialBuckets(64, 4, 10),
		}),
		verify: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hookyard_ingress_verify_seconds", Help: "Signature verification time, by provider.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16),
		}, []string{"provider"}),
	}
	reg.MustRegister(m.bodyBytes, m.verify)
	return m
}

// nonceTTL is how long a signature nonce stays bound: as long as the
// signature it belongs to passes the timestamp check (with room for clock
// skew), or, where the signature covers no timestamp or the check is off,
// the dedupe window.
func nonceTTL(timed bool, tolerance, window time.Duration) time.Duration {
	if !timed || tolerance <= 0 {
		return window
	}
	return 2*tolerance + time.Minute
}
