package bench

import (
	"context"
	"runtime"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
)

// Usage explains a phase's figures: on a small shared machine a low
// throughput means little until it is known whether the host was out of
// CPU, how much CPU the server spent per request, and how long requests
// waited for the broker.
type Usage struct {
	HostBusy    float64       // fraction of all CPUs busy during the phase, any process
	ServerCPU   time.Duration // CPU time of the server process during the phase; 0 if unknown
	ClientCPU   time.Duration // CPU time of this process (load generator or raw publisher)
	BrokerCPU   time.Duration // CPU time of local RabbitMQ (beam.smp); 0 if not visible
	RedisCPU    time.Duration // CPU time of local Redis (redis-server); 0 if not visible
	StackCPU    time.Duration // server (or raw publisher) + broker + Redis
	MeanConfirm time.Duration // ingress only: mean publish-to-confirm time
	MeanVerify  time.Duration // ingress only: mean signature verification time
}

// snapshot is the state sampled at the start and end of a phase.
type snapshot struct {
	cpu                  loadtest.CPUSample
	confirmSum, confirmN float64
	verifySum, verifyN   float64
}

// sample reads the CPU counters (of the server pid, if > 0) and, if
// metricsURL is set, the ingress histograms. Figures that cannot be read
// stay zero: they only explain the measurement, they are not part of it.
func sample(ctx context.Context, pid int, metricsURL string) snapshot {
	s := snapshot{cpu: loadtest.SampleCPU(pid)}
	if metricsURL != "" {
		if m, err := loadtest.ScrapeMetrics(ctx, metricsURL); err == nil {
			s.confirmSum, s.confirmN = m["hookyard_ingress_confirm_seconds_sum"], m["hookyard_ingress_confirm_seconds_count"]
			s.verifySum, s.verifyN = m["hookyard_ingress_verify_seconds_sum"], m["hookyard_ingress_verify_seconds_count"]
		}
	}
	return s
}

// usage returns what happened between a and b.
func usage(a, b snapshot) Usage {
	cpu := b.cpu.Sub(a.cpu)
	u := Usage{
		HostBusy:  cpu.HostBusy,
		ServerCPU: cpu.Server,
		ClientCPU: cpu.Self,
		BrokerCPU: cpu.Broker,
		RedisCPU:  cpu.Redis,
		StackCPU:  cpu.Server + cpu.Broker + cpu.Redis,
	}
	if n := b.confirmN - a.confirmN; n > 0 {
		u.MeanConfirm = time.Duration((b.confirmSum - a.confirmSum) / n * float64(time.Second))
	}
	if n := b.verifyN - a.verifyN; n > 0 {
		u.MeanVerify = time.Duration((b.verifySum - a.verifySum) / n * float64(time.Second))
	}
	return u
}

// other returns the cores busy over elapsed that no process of the
// benchmark used, never below zero.
func (u Usage) other(elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	ours := (u.ServerCPU + u.ClientCPU + u.BrokerCPU + u.RedisCPU).Seconds() / elapsed.Seconds()
	return max(u.HostBusy*float64(runtime.NumCPU())-ours, 0)
}
