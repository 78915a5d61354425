// Command bench compares Hookyard jobs with asynq (github.com/hibiken/asynq)
// in one run, against the same RabbitMQ and Redis at the same concurrency:
// no-op tasks end to end (tasks/s, CPU per task), enqueue→start latency at
// a fixed rate, and many tasks scheduled an hour ahead (RSS of the jobs
// service, Redis memory growth). A floor phase runs the same no-op tasks
// through the least the mandated transports allow (floor.go), to say
// whether any design could reach a target set against asynq on this
// machine. It lives in a module of its own so asynq
// never becomes a dependency of the service. asynq runs in a Redis
// database of its own (-asynq-db) on a queue of its own; the jobs service
// under a key prefix and queue names of its own; both are deleted at the
// end.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/worker"
)

const (
	tenant = "bench"
	apiKey = "bench-key"
	queue  = "bench"
)

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func main() { os.Exit(run()) }

// run is main, returning the exit code so deferred profiles are written.
func run() int {
	var (
		amqpURL   = flag.String("amqp", env("HOOKYARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ")
		redisURL  = flag.String("redis", env("HOOKYARD_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis (the jobs service's database)")
		asynqDB   = flag.Int("asynq-db", 9, "Redis database for asynq, on the same server")
		n         = flag.Int("n", 10000, "no-op tasks for the throughput run")
		conc      = flag.Int("c", 64, "concurrency: worker slots (jobs) and server concurrency (asynq)")
		enqueuers = flag.Int("enqueuers", 32, "concurrent enqueuers in the throughput run")
		rate      = flag.Float64("rate", 200, "tasks per second in the latency run")
		latN      = flag.Int("latency-n", 2000, "tasks in the latency run")
		sched     = flag.Int("scheduled", 100000, "tasks scheduled an hour ahead")
		serveMode = flag.Bool("serve", false, "internal: run the jobs service")
		id        = flag.String("id", fmt.Sprintf("b%x", rand.Uint32()), "internal: run id")
		grpcAddr  = flag.String("grpc", "127.0.0.1:0", "internal: gRPC address of the service")
		profile   = flag.String("cpuprofile", "", "write CPU profiles of the benchmark process (<path>.bench) and the jobs service (<path>.service)")
	)
	flag.Parse()
	if *profile != "" {
		suffix := ".bench"
		if *serveMode {
			suffix = ".service"
		}
		stop, err := startProfile(*profile + suffix)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cpuprofile:", err)
			return 1
		}
		defer stop()
	}
	if *serveMode {
		if err := serve(*amqpURL, *redisURL, *id, *grpcAddr); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			return 1
		}
		return 0
	}
	b := &bench{amqpURL: *amqpURL, redisURL: *redisURL, asynqDB: *asynqDB, id: *id, conc: *conc, profile: *profile}
	err := b.run(*n, *enqueuers, *rate, *latN, *sched)
	b.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

// startProfile writes a CPU profile to path until the returned func runs.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

type bench struct {
	amqpURL, redisURL, id string
	asynqDB, conc         int
	profile               string

	svc     *exec.Cmd
	cc      *grpc.ClientConn
	floorCC *grpc.ClientConn
	rdb     *redis.Client
	aopt    asynq.RedisClientOpt
	aqueue  string
	results []string
}

// result is one measured phase of one system.
type result struct {
	tasksPerSec, cpuPerTaskUs float64
	// serverCPUPerTaskUs is the CPU of the RabbitMQ and Redis server
	// processes per task: shared with other work on the host, so an upper
	// bound of what the run cost them.
	serverCPUPerTaskUs float64
	p50, p99           time.Duration
	rssMiB, redisMiB   float64
}

func (b *bench) run(n, enqueuers int, rate float64, latN, sched int) error {
	o, err := redis.ParseURL(b.redisURL)
	if err != nil {
		return err
	}
	b.rdb = redis.NewClient(o)
	b.aopt = asynq.RedisClientOpt{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: b.asynqDB}
	b.aqueue = "hookyard-bench-" + b.id
	if err := b.start(); err != nil {
		return err
	}
	fmt.Printf("jobs vs asynq %s: concurrency %d; host: %s\n", asynqVersion, b.conc, loadavg())

	var ja, aa result
	if aa, err = b.asynqRun(n, enqueuers, 0); err != nil {
		return fmt.Errorf("asynq throughput: %w", err)
	}
	if ja, err = b.jobsRun(n, enqueuers, 0); err != nil {
		return fmt.Errorf("jobs throughput: %w", err)
	}
	var fa result
	if fa, err = b.floorRun(n, enqueuers); err != nil {
		return fmt.Errorf("floor throughput: %w", err)
	}
	var jl, al result
	if al, err = b.asynqRun(latN, 0, rate); err != nil {
		return fmt.Errorf("asynq latency: %w", err)
	}
	if jl, err = b.jobsRun(latN, 0, rate); err != nil {
		return fmt.Errorf("jobs latency: %w", err)
	}
	var js, as result
	if as, err = b.asynqScheduled(sched); err != nil {
		return fmt.Errorf("asynq scheduled: %w", err)
	}
	if js, err = b.jobsScheduled(sched); err != nil {
		return fmt.Errorf("jobs scheduled: %w", err)
	}

	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
	fmt.Printf("\n%-38s %14s %14s %8s  %s\n", "measure", "jobs", "asynq", "ratio", "target")
	fmt.Printf("%-38s %14.0f %14.0f %7.2fx  >= 2x asynq: %s\n", fmt.Sprintf("no-op tasks/s (%d tasks)", n), ja.tasksPerSec, aa.tasksPerSec, ja.tasksPerSec/aa.tasksPerSec, met(ja.tasksPerSec >= 2*aa.tasksPerSec))
	fmt.Printf("%-38s %14.0f %14.0f %7.2fx\n", "CPU µs per task (all processes)", ja.cpuPerTaskUs, aa.cpuPerTaskUs, ja.cpuPerTaskUs/aa.cpuPerTaskUs)
	fmt.Printf("%-38s %14s %14s %7.2fx  <= 5 ms: %s\n", fmt.Sprintf("enqueue→start p50 at %.0f/s", rate), ms(jl.p50), ms(al.p50), float64(jl.p50)/float64(al.p50), met(jl.p50 <= 5*time.Millisecond))
	fmt.Printf("%-38s %14s %14s %7.2fx  <= 20 ms: %s\n", fmt.Sprintf("enqueue→start p99 at %.0f/s", rate), ms(jl.p99), ms(al.p99), float64(jl.p99)/float64(al.p99), met(jl.p99 <= 20*time.Millisecond))
	fmt.Printf("%-38s %11.1f MiB %14s %8s  <= 128 MiB: %s\n", fmt.Sprintf("jobs service RSS, %d scheduled", sched), js.rssMiB, "-", "", met(js.rssMiB <= 128))
	fmt.Printf("%-38s %11.1f MiB %10.1f MiB %7.2fx\n", fmt.Sprintf("Redis memory growth, %d scheduled", sched), js.redisMiB, as.redisMiB, js.redisMiB/as.redisMiB)
	fmt.Printf("\nfloor: one gRPC enqueue -> one confirmed publish; consume -> one gRPC completion -> ack (same concurrency, %d tasks)\n", n)
	fmt.Printf("%-38s %14s %14s %14s %12s %12s\n", "measure", "floor", "asynq", "jobs", "floor/asynq", "jobs/floor")
	fmt.Printf("%-38s %14.0f %14.0f %14.0f %11.2fx %11.2fx\n", "no-op tasks/s", fa.tasksPerSec, aa.tasksPerSec, ja.tasksPerSec, fa.tasksPerSec/aa.tasksPerSec, ja.tasksPerSec/fa.tasksPerSec)
	fmt.Printf("%-38s %14.0f %14.0f %14.0f %11.2fx %11.2fx\n", "CPU µs per task (benchmark + service)", fa.cpuPerTaskUs, aa.cpuPerTaskUs, ja.cpuPerTaskUs, fa.cpuPerTaskUs/aa.cpuPerTaskUs, ja.cpuPerTaskUs/fa.cpuPerTaskUs)
	fmt.Printf("%-38s %14.0f %14.0f %14.0f %11.2fx %11.2fx\n", "RabbitMQ+Redis CPU µs per task (shared)", fa.serverCPUPerTaskUs, aa.serverCPUPerTaskUs, ja.serverCPUPerTaskUs, fa.serverCPUPerTaskUs/aa.serverCPUPerTaskUs, ja.serverCPUPerTaskUs/fa.serverCPUPerTaskUs)
	if fa.tasksPerSec >= 2*aa.tasksPerSec {
		fmt.Println("the floor reaches 2x asynq on this machine")
	} else {
		fmt.Printf("the floor does NOT reach 2x asynq on this machine (%.2fx): no design with these transports meets the target here\n", fa.tasksPerSec/aa.tasksPerSec)
	}
	fmt.Printf("host after the run: %s\n", loadavg())
	return nil
}

const asynqVersion = "v0.25.1"

func loadavg() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "load unknown"
	}
	return "load average " + strings.Join(f[:3], " ")
}

// start runs the jobs service as a child process (this binary in -serve
// mode) and connects to it.
func (b *bench) start() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// The service listens on a port of its own choosing and says which.
	args := []string{"-serve", "-id", b.id, "-grpc", "127.0.0.1:0", "-amqp", b.amqpURL, "-redis", b.redisURL}
	if b.profile != "" {
		args = append(args, "-cpuprofile", b.profile)
	}
	b.svc = exec.Command(exe, args...)
	b.svc.Stderr = os.Stderr
	out, err := b.svc.StdoutPipe()
	if err != nil {
		return err
	}
	if err := b.svc.Start(); err != nil {
		return err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addrs, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	addr, floor, ok2 := strings.Cut(addrs, " ")
	if err != nil || !ok || !ok2 {
		return fmt.Errorf("jobs service did not start: %q %v", line, err)
	}
	if b.cc, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return err
	}
	b.floorCC, err = grpc.NewClient(floor, grpc.WithTransportCredentials(insecure.NewCredentials()))
	return err
}

// cpuTicks is the user+system CPU of a process in clock ticks (100 Hz).
func cpuTicks(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return u + k
}

// serverCPU is the CPU time used so far by the RabbitMQ (beam.smp) and
// Redis (redis-server) processes on this host, whoever they serve.
func serverCPU() time.Duration {
	var ticks float64
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if c := strings.TrimSpace(string(comm)); c == "beam.smp" || c == "redis-server" {
			ticks += cpuTicks(pid)
		}
	}
	return time.Duration(ticks * float64(10*time.Millisecond))
}

// cpu is the CPU time used so far by this process and the service.
func (b *bench) cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return self + time.Duration(cpuTicks(b.svc.Process.Pid)*float64(10*time.Millisecond))
}

func rssMiB(pid int) float64 {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for l := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func (b *bench) usedMemory(db int) float64 {
	o := *b.rdb.Options()
	o.DB = db
	c := redis.NewClient(&o)
	defer c.Close()
	info, _ := c.Info(context.Background(), "memory").Result()
	for l := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n / (1 << 20)
		}
	}
	return 0
}

// recorder notes when each task was enqueued and when it started.
type recorder struct {
	mu   sync.Mutex
	sent map[string]time.Time
	lat  []time.Duration
	want int
	all  chan struct{}
}

func newRecorder(n int) *recorder {
	return &recorder{sent: make(map[string]time.Time, n), want: n, all: make(chan struct{})}
}

func (r *recorder) enqueued(id string) {
	r.mu.Lock()
	r.sent[id] = time.Now()
	r.mu.Unlock()
}

func (r *recorder) started(id string) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if at, ok := r.sent[id]; ok {
		delete(r.sent, id)
		r.lat = append(r.lat, now.Sub(at))
		if len(r.lat) == r.want {
			close(r.all)
		}
	}
}

// drive enqueues n tasks with enqueue, all at once from enqueuers
// goroutines or paced at rate per second, waits until every one started,
// and measures.
func (b *bench) drive(r *recorder, n, enqueuers int, rate float64, enqueue func(id string) error) (result, error) {
	cpu0, srv0, start := b.cpu(), serverCPU(), time.Now()
	errc := make(chan error, 1)
	send := func(i int) {
		id := fmt.Sprintf("%s-%d-%d", b.id, time.Now().UnixNano(), i)
		r.enqueued(id)
		if err := enqueue(id); err != nil {
			select {
			case errc <- err:
			default:
			}
		}
	}
	if rate > 0 {
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		for i := range n {
			<-tick.C
			go send(i)
		}
		tick.Stop()
	} else {
		var wg sync.WaitGroup
		next := make(chan int)
		for range enqueuers {
			wg.Go(func() {
				for i := range next {
					send(i)
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	select {
	case <-r.all:
	case err := <-errc:
		return result{}, err
	case <-time.After(10 * time.Minute):
		return result{}, fmt.Errorf("not every task started")
	}
	elapsed, cpu, srv := time.Since(start), b.cpu()-cpu0, serverCPU()-srv0
	slices.Sort(r.lat)
	pct := func(p float64) time.Duration { return r.lat[int(p*float64(len(r.lat)-1))] }
	return result{tasksPerSec: float64(n) / elapsed.Seconds(), cpuPerTaskUs: float64(cpu.Microseconds()) / float64(n),
		serverCPUPerTaskUs: float64(srv.Microseconds()) / float64(n), p50: pct(0.5), p99: pct(0.99)}, nil
}

func (b *bench) auth(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
}

// jobsRun runs n no-op tasks through the jobs service and the Go worker.
func (b *bench) jobsRun(n, enqueuers int, rate float64) (result, error) {
	r := newRecorder(n)
	w := worker.New(b.cc, worker.Config{APIKey: apiKey, Queues: []string{queue}, Slots: b.conc, ID: "bench"})
	warm, warmID := make(chan struct{}), fmt.Sprintf("%s-warm-%d", b.id, time.Now().UnixNano())
	var once sync.Once
	w.Handle("noop", func(_ context.Context, t *worker.Task) (any, error) {
		if t.ID == warmID {
			once.Do(func() { close(warm) })
		}
		r.started(t.ID)
		return nil, nil
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { stop(); <-done }()
	tasks := jobsv1.NewTaskServiceClient(b.cc)
	actx := b.auth(context.Background())
	enqueue := func(id string) error {
		_, err := tasks.CreateTask(actx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: id, Name: "noop", Queue: queue}})
		return err
	}
	// One task first, so the queue and the worker's subscription exist.
	if err := enqueue(warmID); err != nil {
		return result{}, err
	}
	select {
	case <-warm:
	case <-time.After(30 * time.Second):
		return result{}, fmt.Errorf("the first task did not start")
	}
	return b.drive(r, n, enqueuers, rate, enqueue)
}

// asynqRun runs n no-op tasks through an asynq client and server.
func (b *bench) asynqRun(n, enqueuers int, rate float64) (result, error) {
	r := newRecorder(n)
	srv := asynq.NewServer(b.aopt, asynq.Config{Concurrency: b.conc, Queues: map[string]int{b.aqueue: 1}, LogLevel: asynq.ErrorLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(_ context.Context, t *asynq.Task) error {
		r.started(string(t.Payload()))
		return nil
	})
	if err := srv.Start(mux); err != nil {
		return result{}, err
	}
	defer srv.Shutdown()
	client := asynq.NewClient(b.aopt)
	defer client.Close()
	enqueue := func(id string) error {
		_, err := client.Enqueue(asynq.NewTask("noop", []byte(id)), asynq.Queue(b.aqueue), asynq.Retention(0))
		return err
	}
	return b.drive(r, n, enqueuers, rate, enqueue)
}

// jobsScheduled enqueues n tasks an hour ahead (in batches of 1000) and
// measures the service's RSS and Redis's growth.
func (b *bench) jobsScheduled(n int) (result, error) {
	mem0 := b.usedMemory(0)
	tasks := jobsv1.NewTaskServiceClient(b.cc)
	actx := b.auth(context.Background())
	eta := timestamppb.New(time.Now().Add(time.Hour))
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	next := make(chan int)
	for range 4 {
		wg.Go(func() {
			for start := range next {
				req := &jobsv1.BatchCreateTasksRequest{}
				for i := start; i < min(start+1000, n); i++ {
					req.Requests = append(req.Requests, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "later", Queue: queue, Eta: eta,
						Id: fmt.Sprintf("%s-later-%d", b.id, i)}})
				}
				if _, err := tasks.BatchCreateTasks(actx, req); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		})
	}
	for start := 0; start < n; start += 1000 {
		next <- start
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return result{}, err
	default:
	}
	return result{rssMiB: rssMiB(b.svc.Process.Pid), redisMiB: b.usedMemory(0) - mem0}, nil
}

// asynqScheduled enqueues n tasks an hour ahead with asynq.
func (b *bench) asynqScheduled(n int) (result, error) {
	mem0 := b.usedMemory(b.asynqDB)
	client := asynq.NewClient(b.aopt)
	defer client.Close()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				if _, err := client.Enqueue(asynq.NewTask("later", []byte(strconv.Itoa(i))), asynq.Queue(b.aqueue), asynq.ProcessIn(time.Hour)); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return result{}, err
	default:
	}
	return result{redisMiB: b.usedMemory(b.asynqDB) - mem0}, nil
}

// cleanup stops the service and deletes what both systems left: the jobs
// keys and queues of this run, asynq's queue and its keys.
func (b *bench) cleanup() {
	ctx := context.Background()
	if b.cc != nil {
		b.cc.Close()
	}
	if b.floorCC != nil {
		b.floorCC.Close()
	}
	if b.svc != nil && b.svc.Process != nil {
		_ = b.svc.Process.Signal(syscall.SIGTERM)
		_ = b.svc.Wait()
	}
	if b.rdb == nil {
		return
	}
	del := func(c *redis.Client, pattern string) {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 500 {
				c.Del(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	}
	del(b.rdb, "{hookyard:bench:jobs:"+b.id+"}:*")
	insp := asynq.NewInspector(b.aopt)
	_ = insp.DeleteQueue(b.aqueue, true)
	insp.Close()
	o := *b.rdb.Options()
	o.DB = b.asynqDB
	ac := redis.NewClient(&o)
	del(ac, "asynq:{"+b.aqueue+"}:*")
	ac.SRem(ctx, "asynq:queues", b.aqueue)
	ac.Close()
	b.rdb.Close()
	if c, err := amqp.Dial(b.amqpURL); err == nil {
		prefix := "bench.jobs." + b.id
		for _, q := range []string{prefix + ".t." + tenant + "." + queue, prefix + ".http", prefix + ".triggers", prefix + ".events.unrouted", floorQueue(b.id)} {
			for _, name := range []string{q, q + ".dlq"} {
				if ch, err := c.Channel(); err == nil {
					_, _ = ch.QueueDelete(name, false, false, false)
					ch.Close()
				}
			}
		}
		if ch, err := c.Channel(); err == nil {
			_ = ch.ExchangeDelete(prefix+".events", false, false)
			_ = ch.ExchangeDelete(prefix+".events.unrouted", false, false)
			ch.Close()
		}
		c.Close()
	}
}
