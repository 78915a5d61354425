package bench

import (
	"runtime"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
)

// Usage says where the CPU went during a phase. On a small shared host a
// throughput figure means little until it is known whether the host was
// out of CPU and which process used it.
type Usage struct {
	HostBusy   float64       // fraction of all CPUs busy, any process
	Wall       time.Duration // length of the phase
	Dispatcher time.Duration // CPU of the dispatcher process
	Bench      time.Duration // CPU of this process (publisher, sink, client)
	Broker     time.Duration // CPU of RabbitMQ (beam.smp), if visible
	Redis      time.Duration // CPU of redis-server, if visible
}

// usage returns the CPU used between a and b, sampled with the
// dispatcher's pid.
func usage(a, b loadtest.CPUSample) Usage {
	cpu := b.Sub(a)
	return Usage{
		HostBusy:   cpu.HostBusy,
		Wall:       cpu.Wall,
		Dispatcher: cpu.Server,
		Bench:      cpu.Self,
		Broker:     cpu.Broker,
		Redis:      cpu.Redis,
	}
}

// cores returns the CPU time as a number of cores busy over the phase.
func (u Usage) cores(cpu time.Duration) float64 {
	if u.Wall <= 0 {
		return 0
	}
	return cpu.Seconds() / u.Wall.Seconds()
}

// other returns the cores used by processes outside the benchmark (other
// work on a shared host, kernel threads), never below zero.
func (u Usage) other() float64 {
	ours := u.cores(u.Dispatcher) + u.cores(u.Bench) + u.cores(u.Broker) + u.cores(u.Redis)
	return max(u.HostBusy*float64(runtime.NumCPU())-ours, 0)
}
