package jobs_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/worker"
)

// benchRun enqueues b.N no-op tasks (all at once with enqueuers
// concurrent enqueuers, or paced at rate per second when rate > 0) for a
// worker with 64 slots, waits for every one to start, and reports
// tasks/s and the enqueue→start latency percentiles.
func benchRun(b *testing.B, enqueuers int, rate float64) {
	trips := &redistest.RoundTrips{}
	e := jobstest.Start(b, jobstest.Options{Heartbeat: 5 * time.Second, RedisHook: trips})
	r := e.Replicas[0]
	var mu sync.Mutex
	sent := make(map[string]time.Time, b.N)
	var lat []time.Duration
	all, warm := make(chan struct{}), make(chan struct{})
	calls := &jobstest.Calls{ClientConnInterface: r.Conn} // the worker's and the enqueuers' calls
	w := worker.New(calls, worker.Config{APIKey: e.Acme.Key, Queues: []string{"bench"}, Slots: 64})
	w.Handle("noop", func(ctx context.Context, t *worker.Task) (any, error) {
		now := time.Now()
		if t.ID == "b--1" {
			close(warm)
			return nil, nil
		}
		mu.Lock()
		if at, ok := sent[t.ID]; ok {
			delete(sent, t.ID)
			lat = append(lat, now.Sub(at))
			if len(lat) == b.N {
				close(all)
			}
		}
		mu.Unlock()
		return nil, nil
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { stop(); <-done }()
	auth := e.Acme.Ctx(context.Background())
	tasks := jobsv1.NewTaskServiceClient(calls)
	enqueue := func(i int) {
		id := fmt.Sprintf("b-%d", i)
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		if _, err := tasks.CreateTask(auth, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: id, Name: "noop", Queue: "bench"}}); err != nil {
			b.Error(err)
		}
	}
	// One task first, so the queue and the worker's subscription exist.
	enqueue(-1)
	select {
	case <-warm:
	case <-time.After(20 * time.Second):
		b.Fatal("the first task did not start")
	}

	b.ResetTimer()
	trips0, calls0, cpu0 := trips.N(), calls.Total(), cpuTime()
	start := time.Now()
	if rate > 0 {
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		for i := range b.N {
			<-tick.C
			go enqueue(i)
		}
		tick.Stop()
	} else {
		var wg sync.WaitGroup
		next := make(chan int)
		for range enqueuers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					enqueue(i)
				}
			}()
		}
		for i := range b.N {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatal("not every task started")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	// Round trips to Redis of every kind (the service's background loops
	// included) while the tasks ran; they do not depend on the host's load.
	b.ReportMetric(float64(trips.N()-trips0)/float64(b.N), "redis-trips/task")
	// gRPC calls of every kind (enqueue, completion, heartbeat, lease
	// streams opened) made by the enqueuers and the worker.
	b.ReportMetric(float64(calls.Total()-calls0)/float64(b.N), "grpc-calls/task")
	// CPU of this process (service, worker and enqueuers; not Redis or
	// RabbitMQ).
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/task")
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkThroughput: no-op tasks end to end, 32 concurrent enqueuers.
func BenchmarkThroughput(b *testing.B) { benchRun(b, 32, 0) }

// BenchmarkLatencyAt200PerSecond: enqueue→start latency at a fixed rate.
func BenchmarkLatencyAt200PerSecond(b *testing.B) { benchRun(b, 0, 200) }
