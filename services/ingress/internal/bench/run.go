// Package bench measures the ingress service end to end: the real binary,
// in its own process, against the real broker and Redis, compared in the
// same run with the two ceilings it cannot beat (confirmed publishing to a
// quorum queue, and a bare net/http handler). The floors (FloorMode) say
// what share of the confirm ceiling any HTTP service that publishes can
// reach. Measuring the ceilings in the same run on the same machine is what
// makes the ratios meaningful on a noisy, shared host where absolute
// figures drift from run to run.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/platform/rabbit"
)

// Targets from the performance issue.
const (
	// TargetConfirmRatio: ingress throughput at least half the raw
	// confirmed-publish ceiling.
	TargetConfirmRatio = 0.5
	// TargetP99 at a quarter of saturation throughput.
	TargetP99 = 10 * time.Millisecond
	// TargetRSS is the peak resident set size of the ingress process.
	TargetRSS = 64 << 20
)

// Config says what to measure and where.
type Config struct {
	N           int           // requests per closed-loop phase
	Concurrency int           // closed-loop workers (C)
	Duration    time.Duration // length of the fixed-rate phase
	Warmup      int           // unmeasured requests before each closed-loop phase

	AMQPURL  string
	RedisURL string

	// IngressPkg is the package built and measured.
	IngressPkg string
	// PublisherChannels is used by the raw ceiling; it should equal the
	// ingress setting (HOOKYARD_PUBLISHER_CHANNELS) for a fair comparison.
	PublisherChannels int
	// Self is the benchmark executable, re-run with -sink for the bare
	// HTTP ceiling.
	Self string

	// Floors are measured after the raw ceiling (see FloorMode); none
	// if empty.
	Floors []FloorMode

	// CPUProfile, if set, is where the ingress process writes a CPU
	// profile of the saturation phase (the binary is built with the
	// benchprofile tag for it).
	CPUProfile string
	// ProfileFixed moves CPUProfile to the fixed-rate phase.
	ProfileFixed bool

	// Progress receives one line per step; nil discards them.
	Progress io.Writer
}

// Report holds every figure of a run.
type Report struct {
	Config    Config
	Saturated Summary // ingress, closed loop
	Fixed     Summary // ingress, open loop at a quarter of Saturated.Rate
	Raw       Summary // confirmed publishes straight to a quorum queue
	Bare      Summary // bare net/http handler, closed loop
	Floors    []Floor // HTTP handlers that publish, closed loop
	PeakRSS   int64   // ingress VmHWM in bytes
}

// Run performs one complete benchmark. It returns the report so far and an
// error if the run itself failed (setup, non-2xx answers, lost messages);
// missed targets are not errors. Everything it creates (processes, queues,
// the source, Redis keys) is removed before it returns, also when ctx is
// cancelled.
func Run(ctx context.Context, cfg Config) (rep Report, err error) {
	rep.Config = cfg
	if err := cfg.validate(); err != nil {
		return rep, err
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	step := func(format string, args ...any) {
		fmt.Fprintf(progress, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	// Clean-up must run even after ctx is cancelled (Ctrl-C), but bounded.
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	}
	var cleanupErrs []error
	defer func() {
		if err == nil {
			err = errors.Join(cleanupErrs...)
		} else if len(cleanupErrs) > 0 {
			step("clean-up problems: %v", errors.Join(cleanupErrs...))
		}
	}()

	run := randomHex(4)
	var (
		tenant   = "bench" + run
		apiKey   = "bench-" + randomHex(16)
		srcName  = "bench-" + run
		secret   = "whsec_bench_" + randomHex(16)
		queue    = "bench-" + run + "-ingress"
		rawQueue = "bench-raw-" + run
		rawKey   = rawQueue + "." + EventType
	)

	tmp, err := os.MkdirTemp("", "ingress-bench-")
	if err != nil {
		return rep, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	step("building %s", cfg.IngressPkg)
	bin := filepath.Join(tmp, "ingress")
	if cfg.CPUProfile != "" {
		if err := loadtest.Build(ctx, cfg.IngressPkg, bin, "-tags=benchprofile"); err != nil {
			return rep, err
		}
	} else if err := loadtest.Build(ctx, cfg.IngressPkg, bin); err != nil {
		return rep, err
	}

	step("connecting to RabbitMQ")
	// The connection must outlive clean-up after a cancelled ctx.
	br, err := dialBroker(context.WithoutCancel(ctx), cfg.AMQPURL, 15*time.Second)
	if err != nil {
		return rep, err
	}
	defer br.conn.Close()

	defer func() {
		cctx, cancel := cleanupCtx()
		defer cancel()
		n, err := cleanRedis(cctx, cfg.RedisURL, dedupeKeyPrefix(tenant))
		if err != nil {
			cleanupErrs = append(cleanupErrs, err)
		}
		m, err := cleanRedis(cctx, cfg.RedisURL, floorKeyPrefix(run))
		if err != nil {
			cleanupErrs = append(cleanupErrs, err)
		}
		step("removed %d dedupe keys and %d floor keys from Redis", n, m)
	}()

	httpAddr, err := loadtest.FreeAddr()
	if err != nil {
		return rep, err
	}
	grpcAddr, err := loadtest.FreeAddr()
	if err != nil {
		return rep, err
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"HOOKYARD_AMQP_URL="+cfg.AMQPURL,
		"HOOKYARD_REDIS_URL="+cfg.RedisURL,
		"HOOKYARD_HTTP_ADDR="+httpAddr,
		"HOOKYARD_GRPC_ADDR="+grpcAddr,
		"HOOKYARD_API_KEYS="+tenant+":"+apiKey,
		// Ingress logs every accepted webhook at info; at tens of
		// thousands per second that would measure the logger.
		"HOOKYARD_LOG_LEVEL=warn",
		"HOOKYARD_SHUTDOWN_TIMEOUT=5s",
		fmt.Sprintf("HOOKYARD_PUBLISHER_CHANNELS=%d", cfg.PublisherChannels),
	)
	if cfg.CPUProfile != "" {
		cmd.Env = append(cmd.Env, "INGRESS_BENCH_CPUPROFILE="+cfg.CPUProfile)
	}
	step("starting ingress on %s", httpAddr)
	ing, err := loadtest.Start("ingress", cmd)
	if err != nil {
		return rep, err
	}
	stopIngress := func() {
		if err := ing.Stop(10 * time.Second); err != nil {
			cleanupErrs = append(cleanupErrs, err)
		}
	}
	defer stopIngress()
	base := "http://" + httpAddr
	if err := ing.WaitHTTP(ctx, base+"/readyz", http.StatusOK, 30*time.Second); err != nil {
		return rep, err
	}

	api := NewClient(4)
	defer api.CloseIdleConnections()
	if err := createSource(ctx, api, base, apiKey, srcName, secret); err != nil {
		return rep, err
	}
	sourceDeleted := false
	deleteSource := func() {
		if sourceDeleted {
			return
		}
		sourceDeleted = true
		cctx, cancel := cleanupCtx()
		defer cancel()
		if err := deleteSourceREST(cctx, api, base, apiKey, srcName); err != nil {
			cleanupErrs = append(cleanupErrs, err)
		}
	}
	defer deleteSource()

	if err := br.declareQuorum(ctx, queue, srcName+".#"); err != nil {
		return rep, err
	}
	defer func() {
		cctx, cancel := cleanupCtx()
		defer cancel()
		if err := br.deleteQueue(cctx, queue); err != nil {
			cleanupErrs = append(cleanupErrs, err)
		}
	}()

	maxInflight := max(4*cfg.Concurrency, 256)
	client := NewClient(maxInflight)
	defer client.CloseIdleConnections()
	url := base + "/webhooks/" + srcName
	seq := 0 // event ids stay unique across phases
	webhooks := func(n int) Op {
		op := HTTPOp(client, webhookRequests(url, secret, run, seq))
		seq += n
		return op
	}

	// Warm-up: open the keep-alive connections, fill the Redis and AMQP
	// channel pools, and let the broker create the queue's segment files.
	step("ingress warm-up: %d requests", cfg.Warmup)
	if s := ClosedLoop(ctx, "warm-up", cfg.Concurrency, cfg.Warmup, webhooks(cfg.Warmup)); s.Failed() {
		return rep, fmt.Errorf("ingress warm-up: %s", failure(s))
	}
	if err := br.purge(ctx, queue); err != nil {
		return rep, err
	}

	step("ingress saturation: %d requests, %d workers", cfg.N, cfg.Concurrency)
	pid, metrics := ing.PID(), base+"/metrics"
	before := sample(ctx, pid, metrics)
	satProfile, fixedProfile := cfg.CPUProfile, ""
	if cfg.ProfileFixed {
		satProfile, fixedProfile = "", cfg.CPUProfile
	}
	profile(ing, satProfile, syscall.SIGUSR1)
	rep.Saturated = ClosedLoop(ctx, fmt.Sprintf("ingress, closed loop C=%d", cfg.Concurrency), cfg.Concurrency, cfg.N, webhooks(cfg.N))
	profile(ing, satProfile, syscall.SIGUSR2)
	rep.Saturated.Usage = usage(before, sample(ctx, pid, metrics))
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if rep.Saturated.Failed() {
		return rep, fmt.Errorf("ingress saturation: %s; ingress output:\n%s", failure(rep.Saturated), lastLines(ing.Logs(), 20))
	}
	if err := expectDepth(ctx, br, queue, rep.Saturated.OK); err != nil {
		return rep, fmt.Errorf("ingress saturation: %w", err)
	}
	if err := br.purge(ctx, queue); err != nil {
		return rep, err
	}

	rate := rep.Saturated.Rate / 4
	step("ingress fixed rate: %.0f req/s for %v", rate, cfg.Duration)
	total := int(rate * cfg.Duration.Seconds())
	before = sample(ctx, pid, metrics)
	profile(ing, fixedProfile, syscall.SIGUSR1)
	rep.Fixed, err = OpenLoop(ctx, fmt.Sprintf("ingress, open loop %.0f/s", rate), rate, cfg.Duration, maxInflight, webhooks(total))
	profile(ing, fixedProfile, syscall.SIGUSR2)
	rep.Fixed.Usage = usage(before, sample(ctx, pid, metrics))
	if err != nil {
		return rep, fmt.Errorf("ingress fixed rate: %w", err)
	}
	if rep.Fixed.Failed() {
		return rep, fmt.Errorf("ingress fixed rate: %s; ingress output:\n%s", failure(rep.Fixed), lastLines(ing.Logs(), 20))
	}
	if err := expectDepth(ctx, br, queue, rep.Fixed.OK); err != nil {
		return rep, fmt.Errorf("ingress fixed rate: %w", err)
	}

	if rep.PeakRSS, _, err = ing.Memory(); err != nil {
		return rep, err
	}
	// Free the CPU for the ceilings: on a small machine an idle but live
	// ingress still costs heartbeats and GC.
	deleteSource()
	stopIngress()
	client.CloseIdleConnections()

	rep.Raw, err = rawCeiling(ctx, cfg, br, rawQueue, rawKey, run, step)
	if err != nil {
		return rep, err
	}

	if len(cfg.Floors) > 0 {
		rep.Floors, err = floors(ctx, cfg, br, maxInflight, run, step)
		if err != nil {
			return rep, err
		}
	}

	rep.Bare, err = bareCeiling(ctx, cfg, maxInflight, run, step)
	if err != nil {
		return rep, err
	}
	return rep, nil
}

// rawCeiling measures confirmed persistent publishes of 1 KiB bodies from
// this process straight into a quorum queue, with the same concurrency and
// channel count as ingress.
func rawCeiling(ctx context.Context, cfg Config, br *broker, queue, key, run string, step func(string, ...any)) (Summary, error) {
	if err := br.declareQuorum(ctx, queue, queue+".#"); err != nil {
		return Summary{}, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		_ = br.deleteQueue(cctx, queue)
	}()
	pub := rabbit.NewPublisher(br.conn, rabbit.PublisherConfig{Channels: cfg.PublisherChannels})
	defer pub.Close()
	body := Payload(run, 0)

	step("raw confirm ceiling warm-up: %d publishes", cfg.Warmup)
	if s := ClosedLoop(ctx, "warm-up", cfg.Concurrency, cfg.Warmup, publishOp(pub, key, run+"w", body)); s.Failed() {
		return s, fmt.Errorf("raw publish warm-up: %s", failure(s))
	}
	if err := br.purge(ctx, queue); err != nil {
		return Summary{}, err
	}
	step("raw confirm ceiling: %d publishes, %d publishers", cfg.N, cfg.Concurrency)
	before := sample(ctx, 0, "")
	s := ClosedLoop(ctx, fmt.Sprintf("raw publish+confirm C=%d", cfg.Concurrency), cfg.Concurrency, cfg.N, publishOp(pub, key, run, body))
	s.Usage = usage(before, sample(ctx, 0, ""))
	// The publisher is this process: it takes the server's place.
	s.Usage.StackCPU = s.Usage.ClientCPU + s.Usage.BrokerCPU + s.Usage.RedisCPU
	if err := ctx.Err(); err != nil {
		return s, err
	}
	if s.Failed() {
		return s, fmt.Errorf("raw publish ceiling: %s", failure(s))
	}
	if err := expectDepth(ctx, br, queue, s.OK); err != nil {
		return s, fmt.Errorf("raw publish ceiling: %w", err)
	}
	return s, nil
}

// bareCeiling measures a bare net/http handler in its own process with the
// same load generator and payload as the ingress saturation phase.
func bareCeiling(ctx context.Context, cfg Config, conns int, run string, step func(string, ...any)) (Summary, error) {
	return serverPhase(ctx, cfg, server{
		label: "bare HTTP sink", name: fmt.Sprintf("bare net/http C=%d", cfg.Concurrency),
		args: []string{"-" + SinkFlag}, ready: "/", readyStatus: http.StatusAccepted,
		run: run, conns: conns,
	}, step)
}

// server is an HTTP server the benchmark binary runs as a child of its own
// (args after the listen address) to measure a ceiling or a floor.
type server struct {
	label, name string // in progress lines; of the measured phase
	args        []string
	env         []string
	ready       string // path answering readyStatus once it serves
	readyStatus int
	run         string
	offset      int          // of the first webhook id
	conns       int          // keep-alive connections of the client
	warmed      func() error // after the warm-up, if set
}

// serverPhase starts srv, warms it up and measures it with the closed-loop
// generator of the ingress phase; srv stops when it returns.
func serverPhase(ctx context.Context, cfg Config, srv server, step func(string, ...any)) (Summary, error) {
	addr, err := loadtest.FreeAddr()
	if err != nil {
		return Summary{}, err
	}
	step("starting %s on %s", srv.label, addr)
	cmd := exec.Command(cfg.Self, append([]string{srv.args[0], addr}, srv.args[1:]...)...)
	cmd.Env = append(os.Environ(), srv.env...)
	child, err := loadtest.Start(srv.label, cmd)
	if err != nil {
		return Summary{}, err
	}
	defer func() { _ = child.Stop(5 * time.Second) }()
	base := "http://" + addr
	if err := child.WaitHTTP(ctx, base+srv.ready, srv.readyStatus, 15*time.Second); err != nil {
		return Summary{}, err
	}
	client := NewClient(srv.conns)
	defer client.CloseIdleConnections()
	// The servers ignore signatures; signing anyway keeps the client-side
	// cost identical to the ingress phase, so the ratio compares servers.
	op := func(offset int) Op {
		return HTTPOp(client, webhookRequests(base+"/webhooks/bench", "whsec_sink", srv.run, offset))
	}
	step("%s warm-up: %d requests", srv.name, cfg.Warmup)
	if s := ClosedLoop(ctx, "warm-up", cfg.Concurrency, cfg.Warmup, op(srv.offset)); s.Failed() {
		return s, fmt.Errorf("%s warm-up: %s", srv.name, failure(s))
	}
	if srv.warmed != nil {
		if err := srv.warmed(); err != nil {
			return Summary{}, err
		}
	}
	step("%s: %d requests, %d workers", srv.name, cfg.N, cfg.Concurrency)
	before := sample(ctx, child.PID(), "")
	s := ClosedLoop(ctx, srv.name, cfg.Concurrency, cfg.N, op(srv.offset+cfg.Warmup))
	s.Usage = usage(before, sample(ctx, child.PID(), ""))
	if err := ctx.Err(); err != nil {
		return s, err
	}
	if s.Failed() {
		return s, fmt.Errorf("%s: %s", srv.name, failure(s))
	}
	return s, nil
}

// expectDepth checks that queue holds exactly want messages: every 2xx
// answer (or confirm) must correspond to one message on the durable path,
// and nothing else may have arrived. The broker updates the count
// asynchronously, so it is polled briefly.
func expectDepth(ctx context.Context, br *broker, queue string, want int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := br.depth(ctx, queue)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("queue %s holds %d messages after %d acknowledged", queue, got, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func createSource(ctx context.Context, c *http.Client, base, key, name, secret string) error {
	body, err := json.Marshal(map[string]any{"name": name, "provider": "stripe", "secrets": []string{secret}})
	if err != nil {
		return fmt.Errorf("create source: %w", err)
	}
	code, msg, err := call(ctx, c, http.MethodPost, base+"/v1/sources", key, body)
	if err != nil {
		return fmt.Errorf("create source %s: %w", name, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("create source %s: status %d: %s", name, code, msg)
	}
	return nil
}

func deleteSourceREST(ctx context.Context, c *http.Client, base, key, name string) error {
	code, msg, err := call(ctx, c, http.MethodDelete, base+"/v1/sources/"+name, key, nil)
	if err != nil {
		return fmt.Errorf("delete source %s: %w", name, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("delete source %s: status %d: %s", name, code, msg)
	}
	return nil
}

func call(ctx context.Context, c *http.Client, method, url, key string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, bytes.TrimSpace(msg), err
}

// failure describes what went wrong in a phase.
func failure(s Summary) string {
	msg := fmt.Sprintf("%d of %d requests failed (%d non-2xx, %d errors; statuses %v)", s.Non2xx+s.Errors, s.Sent, s.Non2xx, s.Errors, s.Statuses)
	if s.FirstErr != "" {
		msg += "; first error: " + s.FirstErr
	}
	return msg
}

func (c Config) validate() error {
	switch {
	case c.N < 1 || c.N > 10_000_000:
		return fmt.Errorf("n = %d: want 1..10000000", c.N)
	case c.Concurrency < 1 || c.Concurrency > 4096:
		return fmt.Errorf("c = %d: want 1..4096", c.Concurrency)
	case c.Duration <= 0 || c.Duration > 10*time.Minute:
		return fmt.Errorf("duration = %v: want (0, 10m]", c.Duration)
	case c.Warmup < 0 || c.Warmup > c.N:
		return fmt.Errorf("warmup = %d: want 0..n", c.Warmup)
	case c.PublisherChannels < 1 || c.PublisherChannels > 64:
		return fmt.Errorf("publisher channels = %d: want 1..64", c.PublisherChannels)
	case c.IngressPkg == "" || c.Self == "":
		return errors.New("ingress package and own executable are required")
	}
	for _, u := range []string{c.AMQPURL, c.RedisURL} {
		if err := loadtest.Loopback(u); err != nil {
			return err
		}
	}
	return nil
}

// profile starts (SIGUSR1) or stops (SIGUSR2) the ingress CPU profile
// when one was asked for; the profile is complete once ingress stopped.
func profile(ing *loadtest.Child, path string, sig syscall.Signal) {
	if path != "" {
		_ = syscall.Kill(ing.PID(), sig)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// lastLines is the end of a child's output, at most n lines, so a failed
// phase shows why the service refused requests.
func lastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			if n--; n == 0 {
				return s[i+1:]
			}
		}
	}
	return s
}
