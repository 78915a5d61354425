// Package bench measures the dispatcher end to end: the real binary in its
// own process, fed through RabbitMQ like production and delivering signed
// webhooks over loopback to a recording sink, compared in the same run
// with a bare HTTP client loop against the same sink and with floors: the
// least a consumer must do on the same machine (floor.go), bare, with the
// delivered records effectively-once output needs (floorrecord.go) and
// with the dispatcher's own admission, and the least a POST /v1/messages
// handler must do before that (floorpost.go). It also measures how a slow
// endpoint affects healthy ones and how much memory the dispatcher needs
// while a large backlog waits for retries.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
)

// Targets from the performance issue.
const (
	TargetCeilingRatio = 0.5       // deliveries/s at least half the bare client loop
	TargetIsolation    = 1.5       // healthy p99 with a slow endpoint / without
	TargetRSS          = 128 << 20 // dispatcher peak RSS with the retry backlog
	// Redis bytes (MEMORY USAGE of the run's keys) per pending retry.
	TargetRedisPerPending = 1 << 10
	// At saturation (the bursts).
	TargetCPUPerDelivery = 100 * time.Microsecond
	// Publish to arrival in the paced phases.
	TargetPacedP50 = 5 * time.Millisecond
	TargetPacedP99 = 20 * time.Millisecond
)

// Config says what to measure and where.
type Config struct {
	N              int           // events per throughput phase
	Concurrency    int           // dispatcher concurrency = endpoint max in-flight = ceiling workers
	PayloadBytes   int           // event body size
	Warmup         int           // unmeasured events before each fan-out
	Paced          time.Duration // length of each paced latency phase
	IsoEndpoints   int           // healthy endpoints in the isolation run
	IsoEvents      int           // events in the isolation run
	SlowDelay      time.Duration // answer delay of the slow endpoint
	Pending        int           // deliveries left pending retry in the memory run
	PendingTimeout time.Duration // bound on the memory run
	PhaseTimeout   time.Duration // bound on waiting for one phase's deliveries
	MemoryOnly     bool          // run only the memory phase
	// Floors measures the floor consumer (ServeFloorConsumer) at each
	// fan-out; Self is this executable, run again as that consumer.
	Floors bool
	Self   string

	AMQPURL, RedisURL string
	DispatcherPkg     string
	Progress          io.Writer
}

// Fanouts are the endpoint counts of the throughput phases.
var Fanouts = []int{1, 10}

// Result is one measured phase.
type Result struct {
	Name       string
	Deliveries int           // distinct deliveries to healthy endpoints
	Window     time.Duration // first publish to last arrival
	Rate       float64       // deliveries per second over Window
	Offered    float64       // paced phases: deliveries per second offered
	Lat        Latency       // publish to arrival
	// Confirm, in the paced phases, is the publisher's wait: publish to
	// the broker's confirm, or POST /v1/messages to its 202.
	Confirm Latency
	// Consume is publish to the consumer's receipt: measured per event
	// by the floors, estimated for the dispatcher from its event-lag
	// histogram (P50 and P99 only).
	Consume    Latency
	Dups       int
	BadSig     int
	Unknown    int
	SlowHits   int
	Deferrals  float64 // tasks put back without an attempt (dispatcher metric)
	RedisTrips float64 // Redis round trips of the dispatcher (its metric; 0: not exported)
	Usage      Usage
}

// PacedFloor is a floor's paced phase and the name of the dispatcher's
// paced phase (in Report.Phases or Report.Messages) it is compared with.
type PacedFloor struct {
	Floor      Result
	Dispatcher string
}

// QueueDepth is a queue's ready messages (-1: absent).
type QueueDepth struct {
	Queue string
	Depth int
}

// Memory is the retry-backlog run.
type Memory struct {
	Target      int           // deliveries meant to be pending
	Pending     int           // tasks in the delay queues at the end
	Attempts    float64       // attempts made (dispatcher metric)
	Reached     bool          // all Target were pending within the bound
	Elapsed     time.Duration // from the first publish to the end
	PeakRSS     int64         // VmHWM of the dispatcher
	RSS         int64         // VmRSS at the end
	RedisGrowth int64         // Redis used_memory growth
	RedisKeys   []KeyUsage    // MEMORY USAGE of the run's keys, by kind
	Depths      []QueueDepth
	Usage       Usage
}

// Report holds every figure of a run.
type Report struct {
	Config   Config
	Phases   []Result // throughput: per fan-out, burst then paced
	Messages []Result // POST /v1/messages: burst then paced
	Ceiling  Result
	Floors   []Result // the floor consumer, per fan-out
	// RecordFloors and AdmitFloors are the floor consumer with delivered
	// records and with the dispatcher's admission, per fan-out; PostFloor
	// is the POST floor.
	RecordFloors []Result
	AdmitFloors  []Result
	PostFloor    Result
	// PacedFloors are the floors' paced phases, each beside the
	// dispatcher's paced phase at the same rate on the same path.
	PacedFloors []PacedFloor
	IsoBase     Result
	IsoSlow     Result
	PeakRSS     int64 // dispatcher of the throughput and isolation runs
	Memory      Memory
	Completed   bool
}

func (c Config) validate() error {
	switch {
	case c.N < 1 || c.N > 1_000_000:
		return fmt.Errorf("n = %d: want 1..1000000", c.N)
	case c.Concurrency < 1 || c.Concurrency > endpoint.MaxMaxInFlight:
		return fmt.Errorf("c = %d: want 1..%d", c.Concurrency, endpoint.MaxMaxInFlight)
	case c.PayloadBytes < 64 || c.PayloadBytes > 1<<20:
		return fmt.Errorf("payload = %d: want 64..1048576", c.PayloadBytes)
	case c.Warmup < 0 || c.Warmup > c.N:
		return fmt.Errorf("warmup = %d: want 0..n", c.Warmup)
	case c.Paced < 0 || c.Paced > 10*time.Minute:
		return fmt.Errorf("paced = %v: want 0..10m", c.Paced)
	case c.IsoEndpoints < 1 || c.IsoEndpoints > 500 || c.IsoEvents < 1 || c.IsoEvents > 10000:
		return errors.New("isolation: want 1..500 endpoints and 1..10000 events")
	case c.SlowDelay < 0 || c.SlowDelay >= endpoint.MaxTimeout:
		return fmt.Errorf("slow delay = %v: want 0..%v", c.SlowDelay, endpoint.MaxTimeout)
	case c.Pending < 0 || c.Pending > 1_000_000:
		return fmt.Errorf("pending = %d: want 0..1000000", c.Pending)
	case c.PendingTimeout <= 0 || c.PhaseTimeout <= 0:
		return errors.New("timeouts must be positive")
	case c.DispatcherPkg == "":
		return errors.New("dispatcher package is required")
	case c.Floors && c.Self == "":
		return errors.New("the floors need the benchmark's own executable")
	}
	for _, u := range []string{c.AMQPURL, c.RedisURL} {
		if err := loadtest.Loopback(u); err != nil {
			return err
		}
	}
	return nil
}

// runner carries what the phases share.
type runner struct {
	cfg    Config
	run    string // random, names everything this run creates
	tenant string
	apiKey string
	source string
	bin    string
	br     *broker
	rdb    redis.UniversalClient
	sink   *Sink
	body   []byte
	rest   api
	log    io.Writer
}

func (r *runner) step(format string, args ...any) {
	fmt.Fprintf(r.log, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// cleanupCtx bounds clean-up, which must run even after ctx is cancelled.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
}

// Run performs one complete benchmark and returns the report so far; the
// error says why the run itself failed (missed targets are not errors).
// Everything it creates (processes, endpoints, queues, Redis keys) is
// removed before it returns, also when ctx is cancelled.
func Run(ctx context.Context, cfg Config) (rep Report, err error) {
	rep.Config = cfg
	if err := cfg.validate(); err != nil {
		return rep, err
	}
	r := &runner{cfg: cfg, run: randomHex(4), log: cfg.Progress, body: payload(cfg.PayloadBytes)}
	if r.log == nil {
		r.log = io.Discard
	}
	r.tenant, r.apiKey, r.source = "bench"+r.run, "bench-"+randomHex(16), "bench"+r.run
	var cleanupErrs []error
	defer func() {
		if err == nil {
			err = errors.Join(cleanupErrs...)
		} else if len(cleanupErrs) > 0 {
			r.step("clean-up problems: %v", errors.Join(cleanupErrs...))
		}
	}()

	tmp, err := os.MkdirTemp("", "dispatcher-bench-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(tmp)
	r.step("building %s", cfg.DispatcherPkg)
	r.bin = filepath.Join(tmp, "dispatcher")
	if err := loadtest.Build(ctx, cfg.DispatcherPkg, r.bin); err != nil {
		return rep, err
	}
	r.step("connecting to RabbitMQ and Redis")
	if r.br, err = dialBroker(context.WithoutCancel(ctx), cfg.AMQPURL); err != nil {
		return rep, err
	}
	defer r.br.close()
	if r.rdb, err = openRedis(cfg.RedisURL); err != nil {
		return rep, err
	}
	defer r.rdb.Close()
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return rep, fmt.Errorf("redis: %w", err)
	}
	if r.sink, err = StartSink(); err != nil {
		return rep, err
	}
	defer r.sink.Close()

	if cfg.MemoryOnly {
		rep.Memory, err = r.memory(ctx, &cleanupErrs)
		rep.Completed = err == nil
		return rep, err
	}

	// Throughput, ceiling and isolation share one dispatcher.
	d, err := r.startDispatcher(ctx, "main", nil)
	if err != nil {
		return rep, err
	}
	stopMain := r.cleanupDispatcher(ctx, d, &cleanupErrs)
	defer stopMain()

	// Each floor runs right after the dispatcher's phases on its path, its
	// paced phase at the dispatcher's paced rate.
	for _, f := range Fanouts {
		res, err := r.throughput(ctx, d, f)
		rep.Phases = append(rep.Phases, res...)
		if err != nil {
			return rep, err
		}
		if err := r.floors(ctx, &rep, func(s floorSpec) bool { return !s.post && s.fanout == f }, pacedRate(res, f)); err != nil {
			return rep, err
		}
	}
	if rep.Messages, err = r.messages(ctx, d); err != nil {
		return rep, err
	}
	if err := r.floors(ctx, &rep, func(s floorSpec) bool { return s.post }, pacedRate(rep.Messages, 1)); err != nil {
		return rep, err
	}
	if rep.Ceiling, err = r.ceiling(ctx, d); err != nil {
		return rep, err
	}
	if rep.IsoBase, rep.IsoSlow, err = r.isolation(ctx, d, rep.rate(10)); err != nil {
		return rep, err
	}
	if rep.PeakRSS, _, err = d.Memory(); err != nil {
		return rep, err
	}
	stopMain()

	if cfg.Pending > 0 {
		if rep.Memory, err = r.memory(ctx, &cleanupErrs); err != nil {
			return rep, err
		}
	}
	rep.Completed = true
	return rep, nil
}

// floors measures the floors that match, if asked to, adding their
// results to rep; evRate is the paced rate in events per second (0: no
// paced phase).
func (r *runner) floors(ctx context.Context, rep *Report, match func(floorSpec) bool, evRate float64) error {
	if !r.cfg.Floors {
		return nil
	}
	for _, s := range floorSpecs() {
		if !match(s) {
			continue
		}
		burst, paced, err := r.floor(ctx, r.cfg.Self, s, evRate)
		switch {
		case s.post:
			rep.PostFloor = burst
		case s.admit:
			rep.AdmitFloors = append(rep.AdmitFloors, burst)
		case s.record:
			rep.RecordFloors = append(rep.RecordFloors, burst)
		default:
			rep.Floors = append(rep.Floors, burst)
		}
		if paced.Name != "" {
			rep.PacedFloors = append(rep.PacedFloors, PacedFloor{Floor: paced, Dispatcher: dispatcherPaced(s)})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// pacedRate is the events per second offered by the paced phase among
// res, with fanout deliveries per event; 0 if it did not run.
func pacedRate(res []Result, fanout int) float64 {
	for _, p := range res {
		if strings.HasSuffix(p.Name, ", paced") && p.Offered > 0 {
			return p.Offered / float64(fanout)
		}
	}
	return 0
}

// dispatcherPaced is the dispatcher's paced phase on the path of floor s.
func dispatcherPaced(s floorSpec) string {
	if s.post {
		return MessagesPaced
	}
	return pacedName(s.fanout)
}

// rate returns the burst delivery rate of fan-out f, 0 if not measured.
func (rep Report) rate(f int) float64 {
	for _, p := range rep.Phases {
		if p.Name == burstName(f) {
			return p.Rate
		}
	}
	return 0
}

func burstName(f int) string { return fmt.Sprintf("fan-out %d, burst", f) }

// instance is one dispatcher process with queues and keys of its own.
type instance struct {
	*loadtest.Child
	base      string
	queues    task.Queues
	keyPrefix string
}

// startDispatcher starts the binary under a queue and key prefix of its
// own, consuming only this run's events, with extra settings appended.
func (r *runner) startDispatcher(ctx context.Context, name string, extra []string) (*instance, error) {
	httpAddr, err := loadtest.FreeAddr()
	if err != nil {
		return nil, err
	}
	grpcAddr, err := loadtest.FreeAddr()
	if err != nil {
		return nil, err
	}
	qp := "hookyard.bench." + r.run + "." + name
	kp := "hookyard:bench:" + r.run + ":" + name
	binding := r.source + ".#"
	cmd := exec.Command(r.bin)
	cmd.Env = append(os.Environ(),
		"HOOKYARD_AMQP_URL="+r.cfg.AMQPURL, "HOOKYARD_REDIS_URL="+r.cfg.RedisURL,
		"HOOKYARD_HTTP_ADDR="+httpAddr, "HOOKYARD_GRPC_ADDR="+grpcAddr,
		"HOOKYARD_API_KEYS="+r.tenant+":"+r.apiKey,
		"HOOKYARD_ALLOW_CIDRS=127.0.0.0/8",
		"HOOKYARD_LOG_LEVEL=warn",
		"HOOKYARD_DISPATCHER_QUEUE_PREFIX="+qp,
		"HOOKYARD_DISPATCHER_KEY_PREFIX="+kp,
		"HOOKYARD_DISPATCHER_EVENT_BINDINGS="+binding,
		"HOOKYARD_DISPATCHER_CONCURRENCY="+strconv.Itoa(r.cfg.Concurrency),
	)
	cmd.Env = append(cmd.Env, extra...)
	r.step("starting dispatcher %q on %s (queues %s.*)", name, httpAddr, qp)
	c, err := loadtest.Start("dispatcher "+name, cmd)
	if err != nil {
		return nil, err
	}
	d := &instance{Child: c, base: "http://" + httpAddr, queues: task.NewQueues(qp, []string{binding}), keyPrefix: kp}
	if err := c.WaitHTTP(ctx, d.base+"/readyz", http.StatusOK, 30*time.Second); err != nil {
		_ = c.Stop(5 * time.Second)
		r.removeState(ctx, d)
		return nil, err
	}
	r.rest = api{base: d.base, key: r.apiKey, client: newClient(4)}
	return d, nil
}

// cleanupDispatcher returns a function, safe to call twice, that stops d
// and removes its queues and Redis keys.
func (r *runner) cleanupDispatcher(ctx context.Context, d *instance, errs *[]error) func() {
	done := false
	return func() {
		if done {
			return
		}
		done = true
		if err := d.Stop(30 * time.Second); err != nil {
			*errs = append(*errs, err)
		}
		if err := r.removeState(ctx, d); err != nil {
			*errs = append(*errs, err)
		}
	}
}

func (r *runner) removeState(ctx context.Context, d *instance) error {
	cctx, cancel := cleanupCtx(ctx)
	defer cancel()
	qerr := r.br.deleteQueues(cctx, d.queues.All())
	x := d.queues.Delays().Exchange()
	if err := r.br.with(cctx, func(ch *amqp.Channel) error { return ch.ExchangeDelete(x, false, false) }); err != nil {
		qerr = errors.Join(qerr, fmt.Errorf("delete exchange %s: %w", x, err))
	}
	n, kerr := cleanRedis(cctx, r.rdb, d.keyPrefix)
	r.step("removed %d queues under %s and %d Redis keys under %s", len(d.queues.All()), d.queues.Deliveries, n, d.keyPrefix)
	return errors.Join(qerr, kerr)
}

// endpoints creates n endpoints of phase p (endpoint i at path i); the
// last one answers after slow if slow > 0. It returns their ids.
func (r *runner) endpoints(ctx context.Context, p *Phase, from, n, maxInFlight int, slow time.Duration) ([]string, error) {
	var ids []string
	for i := from; i < from+n; i++ {
		ep, err := r.rest.createEndpoint(ctx, endpointJSON{
			URL: r.sink.URLFor(p, i), EventTypes: []string{r.source + ".#"}, MaxInFlight: maxInFlight,
		})
		if err != nil {
			return ids, err
		}
		ids = append(ids, ep.ID)
		delay := time.Duration(0)
		if i == from+n-1 {
			delay = slow
		}
		if err := p.SetEndpoint(i, ep.Secret, delay); err != nil {
			return ids, err
		}
	}
	// The dispatcher caches endpoint lists for endpoint.CacheTTL.
	sleepCtx(ctx, endpoint.CacheTTL+200*time.Millisecond)
	return ids, nil
}

func (r *runner) deleteEndpoints(ctx context.Context, ids []string) {
	cctx, cancel := cleanupCtx(ctx)
	defer cancel()
	for _, id := range ids {
		if err := r.rest.deleteEndpoint(cctx, id); err != nil {
			r.step("%v", err)
		}
	}
}

func (r *runner) eventIDs(tag string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = r.run + "-" + tag + "-" + strconv.Itoa(i)
	}
	return ids
}

func (r *runner) events() events {
	return events{b: r.br, source: r.source, tenant: r.tenant, body: r.body}
}

// measure runs publish, waits for want deliveries and condenses phase p.
func (r *runner) measure(ctx context.Context, d *instance, p *Phase, name string, want int, publish func() error) (Result, error) {
	p.Reset()
	// d.base is empty for the floor consumer, which has no metrics.
	metric := func(name string) float64 {
		if d.base == "" {
			return 0
		}
		return scrapeSum(ctx, d.base+"/metrics", name)
	}
	before, defBefore := loadtest.SampleCPU(d.PID()), metric("hookyard_dispatcher_deferrals_total")
	tripsBefore := metric("hookyard_dispatcher_redis_round_trips_total")
	lagBefore, lagOK := r.eventLag(ctx, d)
	err := publish()
	if err == nil {
		err = waitArrivals(ctx, p, want, r.cfg.PhaseTimeout)
	}
	res := Result{Name: name, Usage: usage(before, loadtest.SampleCPU(d.PID()))}
	res.Deferrals = metric("hookyard_dispatcher_deferrals_total") - defBefore
	res.RedisTrips = metric("hookyard_dispatcher_redis_round_trips_total") - tripsBefore
	st := p.Stats()
	res.Deliveries, res.Window = len(st.Latencies), st.Window
	res.Rate = loadtest.Rate(res.Deliveries, st.Window)
	res.Lat = Summarize(st.Latencies)
	res.Consume = Summarize(st.Consumed)
	if lagAfter, ok := r.eventLag(ctx, d); ok && lagOK {
		res.Consume = lagLatency(lagAfter.Sub(lagBefore))
	}
	res.Dups, res.BadSig, res.Unknown, res.SlowHits = st.Dups, st.BadSig, st.Unknown, st.SlowHits
	if err == nil && (st.BadSig > 0 || st.Unknown > 0) {
		err = fmt.Errorf("%s: %d requests with a bad signature, %d for unknown events", name, st.BadSig, st.Unknown)
	}
	if err != nil && d.Exited() {
		proc := "dispatcher"
		if d.base == "" {
			proc = "floor consumer"
		}
		err = fmt.Errorf("%w; %s exited: %v; output:\n%s", err, proc, d.Err(), d.Logs())
	}
	return res, err
}

// eventLag scrapes the dispatcher's event-lag histogram; false for the
// floor consumer, or if the scrape fails (then the phase has no consume
// figure: the figure only explains a measurement).
func (r *runner) eventLag(ctx context.Context, d *instance) (loadtest.Histogram, bool) {
	if d.base == "" {
		return loadtest.Histogram{}, false
	}
	h, err := loadtest.ScrapeHistogram(ctx, d.base+"/metrics", "hookyard_dispatcher_event_lag_seconds")
	return h, err == nil
}

// lagLatency is the median and p99 of the event lag observed in h.
func lagLatency(h loadtest.Histogram) Latency {
	if h.Count <= 0 {
		return Latency{}
	}
	q := func(v float64) time.Duration { return time.Duration(h.Quantile(v) * float64(time.Second)) }
	return Latency{N: int(h.Count), P50: q(0.5), P99: q(0.99)}
}

// throughput measures fan-out f: warm-up, a burst of N events, then a
// paced run at a quarter of the burst rate.
func (r *runner) throughput(ctx context.Context, d *instance, f int) ([]Result, error) {
	p := r.sink.NewPhase("fanout" + strconv.Itoa(f))
	defer r.sink.EndPhase(p)
	ids, err := r.endpoints(ctx, p, 0, f, r.cfg.Concurrency, 0)
	defer r.deleteEndpoints(ctx, ids)
	if err != nil {
		return nil, err
	}
	ev := r.events()
	workers := min(r.cfg.Concurrency, 64)
	if r.cfg.Warmup > 0 {
		r.step("fan-out %d: warm-up, %d events", f, r.cfg.Warmup)
		warm := r.eventIDs(p.name+"w", r.cfg.Warmup)
		if _, err := r.measure(ctx, d, p, "warm-up", len(warm)*f, func() error { return ev.burst(ctx, warm, workers, p.Sent) }); err != nil {
			return nil, err
		}
	}
	r.step("fan-out %d: burst of %d events (%d deliveries)", f, r.cfg.N, r.cfg.N*f)
	burst := r.eventIDs(p.name+"b", r.cfg.N)
	b, err := r.measure(ctx, d, p, burstName(f), len(burst)*f, func() error { return ev.burst(ctx, burst, workers, p.Sent) })
	out := []Result{b}
	if err != nil || r.cfg.Paced == 0 {
		return out, err
	}
	pr, err := r.pacedPhase(ctx, d, p, ev, pacedName(f), max(b.Rate/4/float64(f), 1), f)
	return append(out, pr), err
}

func pacedName(f int) string { return fmt.Sprintf("fan-out %d, paced", f) }

// pacedPhase publishes Paced's worth of events at evRate per second
// through ev and measures their deliveries to fanout endpoints; the
// dispatcher's paced phases and the floors' use it alike.
func (r *runner) pacedPhase(ctx context.Context, d *instance, p *Phase, ev events, name string, evRate float64, fanout int) (Result, error) {
	n := max(int(evRate*r.cfg.Paced.Seconds()), 1)
	r.step("%s: %.0f events/s for %v", name, evRate, r.cfg.Paced)
	ids := r.eventIDs(p.name+"p", n)
	var confirms []time.Duration
	res, err := r.measure(ctx, d, p, name, n*fanout, func() (err error) {
		confirms, err = ev.paced(ctx, ids, evRate, p.Sent)
		return err
	})
	res.Offered = evRate * float64(fanout)
	res.Confirm = Summarize(confirms)
	return res, err
}

// MessageSenders is how many clients send at once in the
// POST /v1/messages phase.
const MessageSenders = 64

// messages measures the POST /v1/messages path to one endpoint: a burst
// of N messages sent by MessageSenders clients, then a paced run at a
// quarter of the burst rate. Latency is from the request's start to the
// arrival at the sink.
func (r *runner) messages(ctx context.Context, d *instance) ([]Result, error) {
	p := r.sink.NewPhase("messages")
	defer r.sink.EndPhase(p)
	ids, err := r.endpoints(ctx, p, 0, 1, r.cfg.Concurrency, 0)
	defer r.deleteEndpoints(ctx, ids)
	if err != nil {
		return nil, err
	}
	ev, done := r.messageEvents(d.base, r.source)
	defer done()
	if r.cfg.Warmup > 0 {
		r.step("POST /v1/messages: warm-up, %d messages", r.cfg.Warmup)
		warm := r.eventIDs("msgw", r.cfg.Warmup)
		if _, err := r.measure(ctx, d, p, "warm-up", len(warm), func() error { return ev.burst(ctx, warm, MessageSenders, p.Sent) }); err != nil {
			return nil, err
		}
	}
	r.step("POST /v1/messages: burst of %d messages, %d senders", r.cfg.N, MessageSenders)
	burst := r.eventIDs("msgb", r.cfg.N)
	b, err := r.measure(ctx, d, p, MessagesBurst, len(burst), func() error { return ev.burst(ctx, burst, MessageSenders, p.Sent) })
	out := []Result{b}
	if err != nil || r.cfg.Paced == 0 {
		return out, err
	}
	pr, err := r.pacedPhase(ctx, d, p, ev, MessagesPaced, max(b.Rate/4, 1), 1)
	return append(out, pr), err
}

// messageEvents sends events as messages under source through
// POST /v1/messages at base, with up to MessageSenders connections; done
// closes them.
func (r *runner) messageEvents(base, source string) (ev events, done func()) {
	client := api{base: base, key: r.apiKey, client: newClient(MessageSenders)}
	// The body the dispatcher delivers is the message's data, so the pad
	// makes it the size of an event's.
	pad := strings.Repeat("x", max(r.cfg.PayloadBytes-len(`{"pad":""}`), 0))
	return events{send: func(ctx context.Context, id string) error { return client.sendMessage(ctx, source, id, pad) }},
		client.client.CloseIdleConnections
}

// MessagesBurst names the burst phase of the POST /v1/messages path.
const MessagesBurst = "POST /v1/messages, burst"

// MessagesPaced names the paced phase of the POST /v1/messages path.
const MessagesPaced = "POST /v1/messages, paced"

// ceiling posts the same number of signed webhooks as the fan-out 1 burst
// straight to the sink with a plain client loop of the same concurrency.
func (r *runner) ceiling(ctx context.Context, d *instance) (Result, error) {
	p := r.sink.NewPhase("ceiling")
	defer r.sink.EndPhase(p)
	secret, err := sign.NewSecret()
	if err != nil {
		return Result{}, err
	}
	if err := p.SetEndpoint(0, secret, 0); err != nil {
		return Result{}, err
	}
	client := newClient(r.cfg.Concurrency)
	defer client.CloseIdleConnections()
	url := r.sink.URLFor(p, 0)
	if r.cfg.Warmup > 0 {
		warm := r.eventIDs("ceilw", r.cfg.Warmup)
		if _, err := r.measure(ctx, d, p, "warm-up", len(warm), func() error {
			return ceiling(ctx, client, url, secret, r.body, warm, r.cfg.Concurrency, p.Sent)
		}); err != nil {
			return Result{}, err
		}
	}
	r.step("ceiling: bare client loop, %d requests, %d workers", r.cfg.N, r.cfg.Concurrency)
	ids := r.eventIDs("ceil", r.cfg.N)
	return r.measure(ctx, d, p, fmt.Sprintf("bare client loop C=%d", r.cfg.Concurrency), len(ids), func() error {
		return ceiling(ctx, client, url, secret, r.body, ids, r.cfg.Concurrency, p.Sent)
	})
}

// isolation delivers IsoEvents events to IsoEndpoints healthy endpoints at
// a quarter of the fan-out 10 burst rate, then again with one more
// endpoint that answers only after SlowDelay; all use the default max
// in-flight.
func (r *runner) isolation(ctx context.Context, d *instance, rate10 float64) (base, slow Result, err error) {
	p := r.sink.NewPhase("isolation")
	defer r.sink.EndPhase(p)
	n := r.cfg.IsoEndpoints
	ids, err := r.endpoints(ctx, p, 0, n, 0, 0)
	defer func() { r.deleteEndpoints(ctx, ids) }()
	if err != nil {
		return base, slow, err
	}
	if rate10 <= 0 {
		rate10 = 400
	}
	evRate := max(rate10/4/float64(n), 0.5)
	ev := r.events()
	run := func(tag, name string) (Result, error) {
		events := r.eventIDs(tag, r.cfg.IsoEvents)
		r.step("isolation: %s, %d events at %.1f/s to %d healthy endpoints", name, len(events), evRate, n)
		res, err := r.measure(ctx, d, p, name, len(events)*n, func() error {
			_, err := ev.paced(ctx, events, evRate, p.Sent)
			return err
		})
		res.Offered = evRate * float64(n)
		return res, err
	}
	if base, err = run("isob", fmt.Sprintf("%d healthy endpoints", n)); err != nil {
		return base, slow, err
	}
	slowID, err := r.endpoints(ctx, p, n, 1, 0, r.cfg.SlowDelay)
	ids = append(ids, slowID...)
	if err != nil {
		return base, slow, err
	}
	slow, err = run("isos", fmt.Sprintf("%d healthy + 1 slow (%v)", n, r.cfg.SlowDelay))
	return base, slow, err
}

// memory leaves Pending deliveries waiting for a retry an hour away against
// an endpoint whose port is closed, on a fresh dispatcher, and reads that
// dispatcher's peak RSS and its queues.
func (r *runner) memory(ctx context.Context, errs *[]error) (m Memory, err error) {
	m.Target = r.cfg.Pending
	// Every attempt fails; the breaker would defer tasks instead of
	// scheduling retries, so it is kept out of this measurement.
	d, err := r.startDispatcher(ctx, "memory", []string{
		"HOOKYARD_RETRY_SCHEDULE=1h", "HOOKYARD_DISPATCHER_BREAKER_FAILURES=1000000000",
	})
	if err != nil {
		return m, err
	}
	defer r.cleanupDispatcher(ctx, d, errs)()
	dead, err := loadtest.FreeAddr() // closed again: connections are refused
	if err != nil {
		return m, err
	}
	ep, err := r.rest.createEndpoint(ctx, endpointJSON{
		URL: "http://" + dead + "/dead", EventTypes: []string{r.source + ".#"}, MaxInFlight: r.cfg.Concurrency,
	})
	if err != nil {
		return m, err
	}
	defer r.deleteEndpoints(ctx, []string{ep.ID})
	sleepCtx(ctx, endpoint.CacheTTL+200*time.Millisecond)

	redisBefore := redisUsedMemory(ctx, r.rdb)
	before, attBefore := loadtest.SampleCPU(d.PID()), scrapeSum(ctx, d.base+"/metrics", "hookyard_dispatcher_deliveries_total")
	start := time.Now()
	pctx, cancel := context.WithDeadline(ctx, start.Add(r.cfg.PendingTimeout))
	defer cancel()
	r.step("memory: %d events to a dead endpoint, retry in 1h; bounded to %v", m.Target, r.cfg.PendingTimeout)
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- r.events().burst(pctx, r.eventIDs("mem", m.Target), min(r.cfg.Concurrency, 64), nil)
	}()
	delays := d.queues.All()[4:]
	lastLog := time.Now()
	for {
		m.Pending = 0
		for _, q := range delays {
			n, err := r.br.depth(ctx, q)
			if err != nil {
				return m, err
			}
			m.Pending += max(n, 0)
		}
		if m.Pending >= m.Target {
			m.Reached = true
			break
		}
		if time.Since(lastLog) >= 15*time.Second {
			lastLog = time.Now()
			peak, _, _ := d.Memory()
			r.step("memory: %d of %d pending after %v, peak RSS %.1f MiB", m.Pending, m.Target, time.Since(start).Round(time.Second), mib(peak))
		}
		if d.Exited() {
			return m, fmt.Errorf("dispatcher exited: %v; output:\n%s", d.Err(), d.Logs())
		}
		if !sleepCtx(pctx, time.Second) {
			break
		}
	}
	m.Elapsed = time.Since(start)
	cancel()
	if err := <-pubErr; err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return m, err
	}
	if ctx.Err() != nil {
		return m, ctx.Err()
	}
	m.Usage = usage(before, loadtest.SampleCPU(d.PID()))
	m.Attempts = scrapeSum(ctx, d.base+"/metrics", "hookyard_dispatcher_deliveries_total") - attBefore
	m.RedisGrowth = redisUsedMemory(ctx, r.rdb) - redisBefore
	if m.RedisKeys, err = redisKeyUsage(ctx, r.rdb, d.keyPrefix); err != nil {
		return m, err
	}
	if m.PeakRSS, m.RSS, err = d.Memory(); err != nil {
		return m, err
	}
	for _, q := range d.queues.All() {
		n, err := r.br.depth(ctx, q)
		if err != nil {
			return m, err
		}
		m.Depths = append(m.Depths, QueueDepth{Queue: q, Depth: n})
	}
	return m, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// redisPerPending is the run's Redis bytes per pending retry, 0 if not
// measured.
func (m Memory) redisPerPending() float64 {
	var total int64
	for _, u := range m.RedisKeys {
		total += u.Bytes
	}
	if m.Pending == 0 || total == 0 {
		return 0
	}
	return float64(total) / float64(m.Pending)
}
