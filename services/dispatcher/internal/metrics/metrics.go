// Package metrics holds the dispatcher's Prometheus series, shared by
// the fan-out, the worker and the API.
package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Metrics are the delivery path's Prometheus series.
type Metrics struct {
	Deliveries *prometheus.CounterVec // by outcome
	Latency    prometheus.Histogram   // attempt time to response headers
	InFlight   *prometheus.GaugeVec   // by endpoint, this replica
	Retries    prometheus.Counter     // retries scheduled (pending in delay queues)
	Deferrals  *prometheus.CounterVec // by reason; not attempts
	DeadLetter prometheus.Counter     // deliveries dead-lettered
	Disabled   *prometheus.CounterVec // endpoints disabled, by reason
	Breaker    *prometheus.GaugeVec   // by endpoint: 0 closed, 1 half-open, 2 open
	Published  *prometheus.CounterVec // fan-out tasks by result
	// FirstAttempts counts the deliveries the fan-out's fast path took
	// up, by result: done (delivered, or its outcome written with its
	// retry, deferral or hold) or handed_over (the budget passed first;
	// its task was published).
	FirstAttempts *prometheus.CounterVec
	// RedisRoundTrips counts commands and pipelines sent to Redis (see
	// CountRoundTrips).
	RedisRoundTrips prometheus.Counter
	// EventLag is how old an event is when its fan-out starts: the time
	// it spent in the broker (and in earlier tries), which a queue depth
	// does not show when the queue drains as fast as it fills.
	EventLag prometheus.Histogram
}

// EventLagBuckets reach from the broker's sub-millisecond hand-off to a
// backlog of half an hour.
var EventLagBuckets = []float64{0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800}

// New registers the series on reg (nil: a private registry).
func New(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_dispatcher_deliveries_total",
			Help: "Delivery attempts and their handling, by outcome (delivered, retry, gone, permanent, blocked, dead_letter, held, dropped, duplicate).",
		}, []string{"outcome"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hookyard_dispatcher_attempt_duration_seconds",
			Help:    "Time from sending a delivery to the subscriber's response headers.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14),
		}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hookyard_dispatcher_in_flight",
			Help: "Requests in flight per endpoint on this replica.",
		}, []string{"endpoint"}),
		Retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookyard_dispatcher_retries_scheduled_total",
			Help: "Retries scheduled into the delay queues.",
		}),
		Deferrals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_dispatcher_deferrals_total",
			Help: "Tasks put back without an attempt, by reason (in_flight, rate_limit, breaker, busy, early).",
		}, []string{"reason"}),
		DeadLetter: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookyard_dispatcher_dead_letters_total",
			Help: "Deliveries that failed for good.",
		}),
		Disabled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_dispatcher_endpoints_disabled_total",
			Help: "Endpoints disabled by the dispatcher, by reason.",
		}, []string{"reason"}),
		Breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hookyard_dispatcher_breaker_state",
			Help: "Circuit breaker state per endpoint on this replica: 0 closed, 1 half-open, 2 open.",
		}, []string{"endpoint"}),
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_dispatcher_fanout_events_total",
			Help: "Events consumed by the fan-out, by result.",
		}, []string{"result"}),
		FirstAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_dispatcher_first_attempts_total",
			Help: "Deliveries whose first attempt the fan-out made itself (fast path), by result: done, or handed_over to a task when the budget passed.",
		}, []string{"result"}),
		RedisRoundTrips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookyard_dispatcher_redis_round_trips_total",
			Help: "Round trips to Redis: single commands and pipelines (each pipeline or transaction is one).",
		}),
		EventLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hookyard_dispatcher_event_lag_seconds",
			Help:    "Age of an event when its fan-out starts: from its CloudEvent time (when ingress or POST /v1/messages accepted it, or when the jobs service ended a task) to its consumption by the dispatcher; an event tried again (put back, redelivered) is counted again, older.",
			Buckets: EventLagBuckets,
		}),
	}
	reg.MustRegister(m.RedisRoundTrips, m.EventLag)
	reg.MustRegister(m.Deliveries, m.Latency, m.InFlight, m.Retries, m.Deferrals, m.DeadLetter, m.Disabled, m.Breaker, m.Published, m.FirstAttempts)
	return m
}

// CountRoundTrips is a go-redis hook that counts round trips on
// m.RedisRoundTrips.
func (m *Metrics) CountRoundTrips() redis.Hook { return roundTrips{m.RedisRoundTrips} }

type roundTrips struct{ c prometheus.Counter }

func (r roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.c.Inc()
		return next(ctx, cmd)
	}
}

func (r roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.c.Inc()
		return next(ctx, cmds)
	}
}
