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

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
)

// FloorFlag is the hidden flag that turns the benchmark binary into the
// floor consumer of the queue it names; FloorURLsFlag lists the endpoint
// URLs and FloorSecretsEnv their secrets, in the same order.
const (
	FloorFlag       = "floor-consumer"
	FloorURLsFlag   = "floor-urls"
	FloorSecretsEnv = "DISPATCHER_BENCH_FLOOR_SECRETS"
)

// FloorConsumerConfig configures the floor consumer.
type FloorConsumerConfig struct {
	AMQPURL  string
	Queue    string
	Prefetch int // as the dispatcher's (its concurrency)
	URLs     []string
	Secrets  []string // one per URL
}

// ServeFloorConsumer is the least a webhook dispatcher must do per event:
// take it from a RabbitMQ queue (prefetch, manual acks), make one signed
// POST per endpoint with the dispatcher's client settings, one after the
// other, and ack. No Redis, no retries, no endpoint lookup: the dispatcher
// can be no faster than this on the same machine. It runs until ctx ends.
func ServeFloorConsumer(ctx context.Context, cfg FloorConsumerConfig) error {
	if len(cfg.URLs) == 0 || len(cfg.URLs) != len(cfg.Secrets) {
		return fmt.Errorf("floor consumer: %d URLs and %d secrets", len(cfg.URLs), len(cfg.Secrets))
	}
	keys := make([][][]byte, len(cfg.Secrets))
	for i, s := range cfg.Secrets {
		k, err := sign.ParseSecret(s)
		if err != nil {
			return fmt.Errorf("floor consumer: secret %d: %w", i, err)
		}
		keys[i] = [][]byte{k}
	}
	// The dispatcher's client (service.go) with the loopback allowance the
	// benchmark gives it (HOOKYARD_ALLOW_CIDRS=127.0.0.0/8).
	client := ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}.
		Client(ssrf.ClientOptions{Timeout: endpoint.MaxTimeout, MaxIdleConnsPerHost: 64})
	conn := rabbit.DialConfig(ctx, cfg.AMQPURL, rabbit.Config{Name: "hookyard-dispatcher-bench-floor"})
	defer conn.Close()
	return conn.ConsumeWithConfig(ctx, cfg.Queue, rabbit.ConsumeConfig{Prefetch: cfg.Prefetch, Concurrency: cfg.Prefetch},
		func(ctx context.Context, d amqp.Delivery) {
			ct := d.ContentType
			if ct == "" {
				ct = "application/json"
			}
			for i, url := range cfg.URLs {
				if err := floorPost(ctx, client, url, keys[i], d.MessageId, ct, d.Body); err != nil {
					// The sink then misses the delivery and the phase fails.
					fmt.Fprintln(os.Stderr, "floor consumer:", err)
					_ = d.Reject(false)
					return
				}
			}
			_ = d.Ack(false)
		})
}

// floorPost sends one delivery as the dispatcher's attempt does (worker.go).
func floorPost(ctx context.Context, client *http.Client, url string, keys [][]byte, id, ct string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("User-Agent", "Hookyard-Dispatcher/1")
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

// floorName names the floor phase of fan-out f.
func floorName(f int) string { return fmt.Sprintf("floor: consumer+POST, fan-out %d", f) }

// floor measures the floor consumer at fan-out f exactly as throughput
// measures the dispatcher: a warm-up, then a burst of N events published
// by the same publishers, from the first publish to the last arrival. Its
// events go out under a source of their own, which the dispatcher's
// binding does not match.
func (r *runner) floor(ctx context.Context, self string, f int) (Result, error) {
	source := r.source + "floor"
	queue := "hookyard.bench." + r.run + ".floor" + strconv.Itoa(f)
	if err := r.br.with(ctx, func(ch *amqp.Channel) error {
		return rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: queue, Bindings: []string{source + ".#"}})
	}); err != nil {
		return Result{}, fmt.Errorf("declare %s: %w", queue, err)
	}
	defer func() {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if err := r.br.deleteQueues(cctx, []string{queue, rabbit.DLQName(queue)}); err != nil {
			r.step("%v", err)
		}
	}()
	p := r.sink.NewPhase("floor" + strconv.Itoa(f))
	defer r.sink.EndPhase(p)
	urls, secrets := make([]string, f), make([]string, f)
	for i := range f {
		s, err := sign.NewSecret()
		if err != nil {
			return Result{}, err
		}
		if err := p.SetEndpoint(i, s, 0); err != nil {
			return Result{}, err
		}
		urls[i], secrets[i] = r.sink.URLFor(p, i), s
	}
	cmd := exec.Command(self, "-"+FloorFlag, queue, "-"+FloorURLsFlag, strings.Join(urls, ","), "-c", strconv.Itoa(r.cfg.Concurrency))
	cmd.Env = append(os.Environ(), "HOOKYARD_AMQP_URL="+r.cfg.AMQPURL, FloorSecretsEnv+"="+strings.Join(secrets, ","))
	r.step("fan-out %d floor: starting the floor consumer on %s", f, queue)
	c, err := loadtest.Start("floor consumer", cmd)
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = c.Stop(10 * time.Second) }()
	if err := r.waitConsumer(ctx, c, queue); err != nil {
		return Result{}, err
	}
	d := &instance{Child: c}
	ev := r.events()
	ev.source = source
	workers := min(r.cfg.Concurrency, 64)
	if r.cfg.Warmup > 0 {
		r.step("fan-out %d floor: warm-up, %d events", f, r.cfg.Warmup)
		warm := r.eventIDs(p.name+"w", r.cfg.Warmup)
		if _, err := r.measure(ctx, d, p, "warm-up", len(warm)*f, func() error { return ev.burst(ctx, warm, workers, p.Sent) }); err != nil {
			return Result{}, err
		}
	}
	r.step("fan-out %d floor: burst of %d events (%d deliveries)", f, r.cfg.N, r.cfg.N*f)
	burst := r.eventIDs(p.name+"b", r.cfg.N)
	return r.measure(ctx, d, p, floorName(f), len(burst)*f, func() error { return ev.burst(ctx, burst, workers, p.Sent) })
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
