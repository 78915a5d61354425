// Package metrics holds the cache service's Prometheus metrics.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the cache service. A nil registerer makes unregistered
// metrics, for tests.
type Metrics struct {
	Gets *prometheus.CounterVec
	// GetHit, GetNearHit and GetStale are children of Gets curried once,
	// so that a hit does not hash its label on every read.
	GetHit, GetNearHit, GetStale prometheus.Counter

	Fills         *prometheus.CounterVec
	FillWaits     *prometheus.CounterVec
	Origin        *prometheus.CounterVec
	OriginLatency *prometheus.HistogramVec
	Invalidations *prometheus.CounterVec
	EarlyRefresh  prometheus.Counter
	WriteBehind   *prometheus.CounterVec
	Backlog       prometheus.Gauge
	Events        *prometheus.CounterVec
}

// New registers the metrics on r.
func New(r prometheus.Registerer) *Metrics {
	m := &Metrics{
		Gets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_cache_gets_total",
			Help: "Key reads by result: near_hit (this replica's near cache), hit, stale (served within the stale-while-revalidate window), miss (filled or not found), negative (a remembered origin 404), error.",
		}, []string{"result"}),
		Fills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_cache_fills_total",
			Help: "Origin loads by outcome: stored, not_found, origin_error, invalidated (the value was not stored because the key was invalidated during the load).",
		}, []string{"result"}),
		FillWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_cache_fill_waits_total",
			Help: "Reads that waited for another replica's fill, by outcome: filled, took_over, timeout.",
		}, []string{"result"}),
		Origin: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_cache_origin_requests_total",
			Help: "Origin requests by operation (load, write) and result (ok, not_found, error).",
		}, []string{"op", "result"}),
		OriginLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hookyard_cache_origin_seconds",
			Help:    "Origin request latency by operation.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14),
		}, []string{"op"}),
		Invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_cache_invalidations_total",
			Help: "Invalidations by cause: key, tag, prefix, all, delete, event.",
		}, []string{"cause"}),
		EarlyRefresh: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookyard_cache_early_refreshes_total",
			Help: "Fresh hits that started a refresh ahead of expiry (XFetch).",
		}),
		WriteBehind: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_cache_write_behind_total",
			Help: "Write-behind events: queued, written, failed (retried later), superseded (coalesced into a later write), dropped (namespace gone), requeued (its message was lost; queued again by the sweeper).",
		}, []string{"result"}),
		Backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hookyard_cache_write_behind_backlog",
			Help: "Write-behind writes not yet accepted by their origin, over all namespaces (as of the last sweep).",
		}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_cache_events_total",
			Help: "Events consumed for invalidation by outcome: applied, unmatched, invalid, error.",
		}, []string{"result"}),
	}
	m.GetHit, m.GetNearHit, m.GetStale = m.Gets.WithLabelValues("hit"), m.Gets.WithLabelValues("near_hit"), m.Gets.WithLabelValues("stale")
	if r != nil {
		r.MustRegister(m.Gets, m.Fills, m.FillWaits, m.Origin, m.OriginLatency, m.Invalidations, m.EarlyRefresh, m.WriteBehind, m.Backlog, m.Events)
	}
	return m
}
