package runner

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the per queue and task name figures of the jobs service. A
// task name is the client's choice, so a tenant that invents names
// without bound grows the series without bound; keep names a fixed set.
type Metrics struct {
	enqueued *prometheus.CounterVec
	started  *prometheus.CounterVec
	ended    *prometheus.CounterVec
	runtime  *prometheus.HistogramVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_jobs_tasks_enqueued_total", Help: "Tasks enqueued.",
		}, []string{"queue", "name"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_jobs_attempts_started_total", Help: "Attempts started.",
		}, []string{"queue", "name"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookyard_jobs_attempts_ended_total",
			Help: "Attempts ended, by result: succeeded, retried, dead (failed for good), cancelled; expired when the lease or hard limit ran out.",
		}, []string{"queue", "name", "result", "expired"}),
		runtime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hookyard_jobs_attempt_seconds", Help: "Run time of attempts.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 10),
		}, []string{"queue", "name"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hookyard_jobs_start_latency_seconds", Help: "From a task's due time to the start of its attempt.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"queue"}),
	}
	if reg != nil {
		reg.MustRegister(m.enqueued, m.started, m.ended, m.runtime, m.latency)
	}
	return m
}

// Enqueued implements store.Observer.
func (m *Metrics) Enqueued(queue, name string) { m.enqueued.WithLabelValues(queue, name).Inc() }

// Started implements store.Observer.
func (m *Metrics) Started(queue, name string, latency time.Duration) {
	m.started.WithLabelValues(queue, name).Inc()
	m.latency.WithLabelValues(queue).Observe(max(latency, 0).Seconds())
}

// Ended implements store.Observer.
func (m *Metrics) Ended(queue, name, state string, runtime time.Duration, expired bool) {
	result := state
	switch state {
	case "pending":
		result = "retried"
	case "failed":
		result = "dead"
	}
	exp := "false"
	if expired {
		exp = "true"
	}
	m.ended.WithLabelValues(queue, name, result, exp).Inc()
	m.runtime.WithLabelValues(queue, name).Observe(max(runtime, 0).Seconds())
}
