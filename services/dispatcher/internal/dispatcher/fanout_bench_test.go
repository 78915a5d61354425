package dispatcher

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// sinkProcessEnv makes TestSinkProcess serve as the benchmark's subscriber.
const sinkProcessEnv = "HOOKYARD_TEST_SINK_PROCESS"

// TestSinkProcess is the benchmark's subscriber when started by
// startSinkProcess (and skipped otherwise): it answers every POST 200 with
// no body and GET /count with how many it answered, in a process of its
// own so that its CPU is not counted as the dispatcher's.
func TestSinkProcess(t *testing.T) {
	if os.Getenv(sinkProcessEnv) == "" {
		t.Skip("run by the fan-out benchmark")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			_, _ = fmt.Fprint(w, n.Load())
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		n.Add(1)
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("http://%s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark closes it
	_ = srv.Close()
}

// startSinkProcess runs TestSinkProcess in a child process and returns its
// URL and a function counting the requests it answered.
func startSinkProcess(b *testing.B) (string, func() int64) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSinkProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), sinkProcessEnv+"=1", "GOMAXPROCS=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("sink process: %v", err)
	}
	url := strings.TrimSpace(line)
	return url, func() int64 {
		resp, err := http.Get(url + "/count")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		n, err := strconv.ParseInt(string(body), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
}

// acks counts what the fan-out does with the events it is handed.
type acks struct{ ack, nack, reject atomic.Int64 }

func (a *acks) Ack(uint64, bool) error        { a.ack.Add(1); return nil }
func (a *acks) Nack(uint64, bool, bool) error { a.nack.Add(1); return nil }
func (a *acks) Reject(uint64, bool) error     { a.reject.Add(1); return nil }

// benchFanout hands b.N events, 32 at a time, to the fan-out of one
// dispatcher (real Redis, real broker for the tasks it would publish) with
// fanout endpoints on one subscriber host, each making its first attempt
// through the fast path, as at saturation. It reports the CPU of this
// process (the dispatcher alone: the subscriber runs in another) and the
// Redis round trips per delivery.
func benchFanout(b *testing.B, fanout int) {
	id := newID()
	cfg := testConfig(id)
	cfg.DefaultMaxInFlight = 1000
	q := cfg.Queues()
	conn := testenv.Rabbit(b, q.Declare)
	rdb := testenv.Redis(b, cfg.KeyPrefix)
	reg := prometheus.NewRegistry()
	d, err := New(cfg, Deps{Rabbit: conn, Redis: rdb, Log: slog.New(slog.DiscardHandler), AllowCIDRs: loopback, Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = d.Close()
		testenv.DeleteQueues(q.All(), q.Delays().Exchange())
	})
	url, answered := startSinkProcess(b)
	tenant := "tenant-" + id
	ctx := auth.WithTenant(context.Background(), tenant)
	for i := range fanout {
		if _, err := d.Endpoints.CreateEndpoint(ctx, &dispatcherv1.CreateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Url: fmt.Sprintf("%s/ep-%d", url, i)}}); err != nil {
			b.Fatal(err)
		}
	}
	var a acks
	var seq atomic.Int64
	handle := func() {
		n := seq.Add(1)
		msg, err := cloudevent.ToPublishing(&eventv1.Event{
			Id: fmt.Sprintf("ev-%d", n), Source: id, Type: "invoice.paid", Tenant: tenant, Time: timestamppb.Now(),
			DataContentType: "application/json", Data: []byte(`{"id":"in_1","amount":4200,"currency":"eur"}`),
		})
		if err != nil {
			b.Error(err)
			return
		}
		d.Fanout.Handle(context.Background(), amqp.Delivery{
			Acknowledger: &a, Headers: msg.Headers, ContentType: msg.ContentType, MessageId: msg.MessageId,
			Timestamp: msg.Timestamp, Type: msg.Type, Body: msg.Body, DeliveryTag: uint64(n),
			Exchange: "hookyard.events", RoutingKey: cloudevent.RoutingKey(id, "invoice.paid"),
		})
	}
	for range 64 { // warm: connections, endpoint cache, breakers
		handle()
	}
	trips := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "hookyard_dispatcher_redis_round_trips_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	keys0 := prefixKeys(b, rdb, cfg.KeyPrefix)
	sent0, trips0, cpu0, rcpu0 := answered(), trips(), cpuTime(), redisCPU(b, rdb)
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(32 / max(1, runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			handle()
		}
	})
	b.StopTimer()
	cpu, rcpu := cpuTime()-cpu0, redisCPU(b, rdb)-rcpu0
	deliveries := float64(b.N * fanout)
	if got := answered() - sent0; got < int64(b.N*fanout) {
		b.Fatalf("the subscriber answered %d requests, want %d", got, b.N*fanout)
	}
	if n, r := a.nack.Load(), a.reject.Load(); n+r > 0 {
		b.Fatalf("%d events put back, %d rejected", n, r)
	}
	b.ReportMetric(float64(cpu.Microseconds())/deliveries, "cpu-µs/delivery")
	b.ReportMetric((trips()-trips0)/deliveries, "redis-trips/delivery")
	b.ReportMetric(deliveries/b.Elapsed().Seconds(), "deliveries/s")
	// Redis's own CPU and the keys a delivery leaves for the retention
	// period: Redis shares the machine, so its cost per delivery is the
	// dispatcher's too.
	b.ReportMetric(float64(rcpu.Microseconds())/deliveries, "redis-cpu-µs/delivery")
	b.ReportMetric(float64(prefixKeys(b, rdb, cfg.KeyPrefix)-keys0)/deliveries, "redis-keys/delivery")
}

// redisCPU is the Redis server's user+system CPU time so far (INFO cpu).
func redisCPU(b *testing.B, rdb redis.UniversalClient) time.Duration {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		name, v, _ := strings.Cut(line, ":")
		if name == "used_cpu_sys" || name == "used_cpu_user" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s: %v", line, err)
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// prefixKeys counts the keys under prefix.
func prefixKeys(b *testing.B, rdb redis.UniversalClient, prefix string) int {
	b.Helper()
	n := 0
	iter := rdb.Scan(context.Background(), 0, prefix+"*", 1000).Iterator()
	for iter.Next(context.Background()) {
		n++
	}
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
	return n
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFanout: events fanned out to 1 and to 10 endpoints on one
// subscriber host, first attempts through the fast path, 32 events at once.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("fanout=%d", n), func(b *testing.B) { benchFanout(b, n) })
	}
}
