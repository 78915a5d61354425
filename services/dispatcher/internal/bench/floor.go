package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
)

// FloorFlag is the hidden flag that turns the benchmark binary into the
// floor consumer of the queue it names; FloorURLsFlag lists the endpoint
// URLs and FloorSecretsEnv their secrets, in the same order. With
// FloorRecordFlag it keeps delivered records in Redis under the prefix it
// names (HOOKYARD_REDIS_URL), through the dispatcher's admission with
// FloorAdmitFlag too; with FloorHTTPFlag it also serves the POST
// floor on the address it names, for the "tenant:key" in FloorAPIKeyEnv.
const (
	FloorFlag       = "floor-consumer"
	FloorURLsFlag   = "floor-urls"
	FloorRecordFlag = "floor-record"
	FloorHTTPFlag   = "floor-http"
	FloorAdmitFlag  = "floor-admit"
	FloorSecretsEnv = "DISPATCHER_BENCH_FLOOR_SECRETS"
	FloorAPIKeyEnv  = "DISPATCHER_BENCH_FLOOR_API_KEY"
)

// FloorConsumerConfig configures the floor consumer.
type FloorConsumerConfig struct {
	AMQPURL  string
	Queue    string
	Prefetch int // as the dispatcher's (its concurrency)
	URLs     []string
	Secrets  []string // one per URL
	// RecordPrefix, if set, makes the consumer keep delivered records
	// (deliveredRecords) under it in the Redis at RedisURL.
	RedisURL     string
	RecordPrefix string
	// Admit, with RecordPrefix, takes each delivery through the
	// dispatcher's admission instead (admitRecords), with Prefetch as the
	// endpoints' max in-flight.
	Admit bool
	// HTTPAddr, if set, is where the POST floor (postFloor) listens, for
	// the API keys in APIKeys ("tenant:key[,tenant:key...]").
	HTTPAddr string
	APIKeys  string
}

// ServeFloorConsumer is the least a webhook dispatcher must do per event:
// take it from a RabbitMQ queue (prefetch, manual acks), make one signed
// POST per endpoint with the dispatcher's client settings, one after the
// other, and ack. No Redis, no retries, no endpoint lookup: the dispatcher
// can be no faster than this on the same machine. With RecordPrefix it
// adds the delivered records effectively-once output needs; with HTTPAddr
// the same process takes the events in through the POST floor. It runs
// until ctx ends.
func ServeFloorConsumer(ctx context.Context, cfg FloorConsumerConfig) error {
	c, err := newFloorConsumer(cfg.URLs, cfg.Secrets)
	if err != nil {
		return err
	}
	if cfg.RecordPrefix != "" {
		rdb, err := openRedis(cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("floor consumer: %w", err)
		}
		defer rdb.Close()
		c.records = &deliveredRecords{rdb: rdb, prefix: cfg.RecordPrefix, keep: publish.DefaultRemember}
		if cfg.Admit {
			c.records = &admitRecords{gate: admit.New(rdb, cfg.RecordPrefix, publish.DefaultRemember), rdb: rdb, maxInFlight: cfg.Prefetch}
		}
	}
	conn := rabbit.DialConfig(ctx, cfg.AMQPURL, rabbit.Config{Name: "hookyard-dispatcher-bench-floor"})
	defer conn.Close()
	if cfg.HTTPAddr != "" {
		keys, err := auth.ParseKeys(cfg.APIKeys)
		if err != nil {
			return fmt.Errorf("POST floor: %w", err)
		}
		pub := rabbit.NewPublisher(conn, rabbit.PublisherConfig{})
		defer pub.Close()
		stop, err := servePostFloor(cfg.HTTPAddr, &postFloor{keys: keys, pub: pub})
		if err != nil {
			return err
		}
		defer stop()
	}
	return conn.ConsumeWithConfig(ctx, cfg.Queue, rabbit.ConsumeConfig{Prefetch: cfg.Prefetch, Concurrency: cfg.Prefetch}, c.handle)
}

// floorConsumer delivers each event of the floor to every endpoint.
type floorConsumer struct {
	client  *http.Client
	urls    []string
	keys    [][][]byte
	records recorder // nil: none kept
}

func newFloorConsumer(urls, secrets []string) (*floorConsumer, error) {
	if len(urls) == 0 || len(urls) != len(secrets) {
		return nil, fmt.Errorf("floor consumer: %d URLs and %d secrets", len(urls), len(secrets))
	}
	keys := make([][][]byte, len(secrets))
	for i, s := range secrets {
		k, err := sign.ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("floor consumer: secret %d: %w", i, err)
		}
		keys[i] = [][]byte{k}
	}
	// The dispatcher's client (service.go) with the loopback allowance the
	// benchmark gives it (HOOKYARD_ALLOW_CIDRS=127.0.0.0/8).
	client := ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}.
		Client(ssrf.ClientOptions{Timeout: endpoint.MaxTimeout, MaxIdleConnsPerHost: 64})
	return &floorConsumer{client: client, urls: urls, keys: keys}, nil
}

// handle delivers one event. With records, the deliveries are claimed
// first and recorded as delivered before the ack (see deliveredRecords).
func (c *floorConsumer) handle(ctx context.Context, d amqp.Delivery) {
	consumed := strconv.FormatInt(time.Now().UnixNano(), 10)
	ct := d.ContentType
	if ct == "" {
		ct = "application/json"
	}
	var (
		cl     *claims // nil without records: send every delivery
		sent   []int   // kept only with records
		busy   bool
		failed error
	)
	if c.records != nil {
		var err error
		if cl, err = c.records.claim(ctx, d.MessageId, len(c.urls)); err != nil {
			fmt.Fprintln(os.Stderr, "floor consumer:", err)
			_ = d.Nack(false, true)
			return
		}
		sent = make([]int, 0, len(c.urls))
	}
	for i, url := range c.urls {
		if cl != nil && cl.states[i] != claimSend {
			busy = busy || cl.states[i] == claimBusy
			continue
		}
		if failed = floorPost(ctx, c.client, url, c.keys[i], d.MessageId, ct, consumed, d.Body); failed != nil {
			break
		}
		if cl != nil {
			sent = append(sent, i)
		}
	}
	if c.records != nil {
		if err := c.records.record(ctx, cl, sent); err != nil {
			// Not acked: the redelivery may send these again.
			fmt.Fprintln(os.Stderr, "floor consumer:", err)
			_ = d.Nack(false, true)
			return
		}
	}
	switch {
	case failed != nil:
		// The sink then misses the delivery and the phase fails.
		fmt.Fprintln(os.Stderr, "floor consumer:", failed)
		_ = d.Reject(false)
	case busy:
		// Another copy of the event is being sent: this one comes back
		// and finds its deliveries recorded, or their claims expired.
		_ = d.Nack(false, true)
	default:
		_ = d.Ack(false)
	}
}

// floorPost sends one delivery as the dispatcher's attempt does (worker.go),
// with consumed, when the event was received, in ConsumedHeader.
func floorPost(ctx context.Context, client *http.Client, url string, keys [][]byte, id, ct, consumed string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("User-Agent", "Hookyard-Dispatcher/1")
	req.Header.Set(ConsumedHeader, consumed)
	sign.Headers(req.Header, keys, id, time.Now(), body)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: status %d", url, resp.StatusCode)
	}
	return nil
}

// floorSpec is one floor phase.
type floorSpec struct {
	name   string // in the report
	tag    string // names its queue, sink phase, events and Redis keys
	fanout int
	record bool // keep delivered records in Redis
	admit  bool // with record: through the dispatcher's admission
	post   bool // events come in through the floor's POST /v1/messages
}

// floorSpecs are the floors measured, in order: the plain floor, the floor
// with delivered records and the floor with the dispatcher's admission at
// each fan-out, then the POST floor (to one endpoint, as the
// POST /v1/messages phase).
func floorSpecs() []floorSpec {
	var out []floorSpec
	for _, f := range Fanouts {
		out = append(out, floorSpec{name: fmt.Sprintf("floor: consumer+POST, fan-out %d", f), tag: "floor" + strconv.Itoa(f), fanout: f})
	}
	for _, f := range Fanouts {
		out = append(out, floorSpec{name: fmt.Sprintf("floor + delivered record, fan-out %d", f), tag: "floorrec" + strconv.Itoa(f), fanout: f, record: true})
	}
	for _, f := range Fanouts {
		out = append(out, floorSpec{name: fmt.Sprintf("floor + admission, fan-out %d", f), tag: "flooradm" + strconv.Itoa(f), fanout: f, record: true, admit: true})
	}
	return append(out, floorSpec{name: "POST floor: handler+publish, consumer+POST", tag: "floorpost", fanout: 1, post: true})
}

// floor measures the floor consumer of s exactly as throughput (or, for
// the POST floor, messages) measures the dispatcher: a warm-up, then a
// burst of N events sent by the same publishers (senders), from the first
// publish to the last arrival, then, if evRate > 0, a paced phase at
// evRate events per second (the dispatcher's paced rate on the same path).
// Its events go out under a source of their own, which the dispatcher's
// binding does not match.
func (r *runner) floor(ctx context.Context, self string, s floorSpec, evRate float64) (burst, paced Result, err error) {
	source := r.source + "floor"
	queue := "hookyard.bench." + r.run + "." + s.tag
	if err := r.br.with(ctx, func(ch *amqp.Channel) error {
		return rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: queue, Bindings: []string{source + ".#"}})
	}); err != nil {
		return burst, paced, fmt.Errorf("declare %s: %w", queue, err)
	}
	defer func() {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if err := r.br.deleteQueues(cctx, []string{queue, rabbit.DLQName(queue)}); err != nil {
			r.step("%v", err)
		}
	}()
	p := r.sink.NewPhase(s.tag)
	defer r.sink.EndPhase(p)
	urls, secrets := make([]string, s.fanout), make([]string, s.fanout)
	for i := range s.fanout {
		secret, err := sign.NewSecret()
		if err != nil {
			return burst, paced, err
		}
		if err := p.SetEndpoint(i, secret, 0); err != nil {
			return burst, paced, err
		}
		urls[i], secrets[i] = r.sink.URLFor(p, i), secret
	}
	args := []string{"-" + FloorFlag, queue, "-" + FloorURLsFlag, strings.Join(urls, ","), "-c", strconv.Itoa(r.cfg.Concurrency)}
	if s.record {
		prefix := "hookyard:bench:" + r.run + ":" + s.tag
		args = append(args, "-"+FloorRecordFlag, prefix)
		if s.admit {
			args = append(args, "-"+FloorAdmitFlag)
		}
		defer func() {
			cctx, cancel := cleanupCtx(ctx)
			defer cancel()
			if _, err := cleanRedis(cctx, r.rdb, prefix); err != nil {
				r.step("%v", err)
			}
		}()
	}
	var httpAddr string
	if s.post {
		var err error
		if httpAddr, err = loadtest.FreeAddr(); err != nil {
			return burst, paced, err
		}
		args = append(args, "-"+FloorHTTPFlag, httpAddr)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "HOOKYARD_AMQP_URL="+r.cfg.AMQPURL, "HOOKYARD_REDIS_URL="+r.cfg.RedisURL,
		FloorSecretsEnv+"="+strings.Join(secrets, ","), FloorAPIKeyEnv+"="+r.tenant+":"+r.apiKey)
	r.step("%s: starting the floor consumer on %s", s.name, queue)
	c, err := loadtest.Start("floor consumer", cmd)
	if err != nil {
		return burst, paced, err
	}
	defer func() { _ = c.Stop(10 * time.Second) }()
	if err := r.waitConsumer(ctx, c, queue); err != nil {
		return burst, paced, err
	}
	d := &instance{Child: c}
	ev := r.events()
	ev.source = source
	workers := min(r.cfg.Concurrency, 64)
	if s.post {
		if err := c.WaitHTTP(ctx, "http://"+httpAddr+"/healthz", http.StatusOK, 15*time.Second); err != nil {
			return burst, paced, err
		}
		var done func()
		ev, done = r.messageEvents("http://"+httpAddr, source)
		defer done()
		workers = MessageSenders
	}
	if r.cfg.Warmup > 0 {
		r.step("%s: warm-up, %d events", s.name, r.cfg.Warmup)
		warm := r.eventIDs(p.name+"w", r.cfg.Warmup)
		if _, err := r.measure(ctx, d, p, "warm-up", len(warm)*s.fanout, func() error { return ev.burst(ctx, warm, workers, p.Sent) }); err != nil {
			return burst, paced, err
		}
	}
	r.step("%s: burst of %d events (%d deliveries)", s.name, r.cfg.N, r.cfg.N*s.fanout)
	ids := r.eventIDs(p.name+"b", r.cfg.N)
	burst, err = r.measure(ctx, d, p, s.name, len(ids)*s.fanout, func() error { return ev.burst(ctx, ids, workers, p.Sent) })
	if err != nil || evRate <= 0 || r.cfg.Paced == 0 {
		return burst, paced, err
	}
	paced, err = r.pacedPhase(ctx, d, p, ev, s.name+", paced", evRate, s.fanout)
	return burst, paced, err
}

// waitConsumer waits until queue has a consumer, so that the consumer's
// start-up is not charged to the warm-up.
func (r *runner) waitConsumer(ctx context.Context, c *loadtest.Child, queue string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		n := 0
		err := r.br.with(ctx, func(ch *amqp.Channel) error {
			q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
			n = q.Consumers
			return err
		})
		switch {
		case err != nil:
			return fmt.Errorf("inspect %s: %w", queue, err)
		case n > 0:
			return nil
		case c.Exited():
			return fmt.Errorf("floor consumer exited: %v; output:\n%s", c.Err(), c.Logs())
		case time.Now().After(deadline):
			return errors.New("floor consumer did not subscribe within 15s; output:\n" + c.Logs())
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}
