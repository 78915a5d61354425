package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
)

// FloorFlag is the hidden flag that turns the benchmark binary into a
// floor server on the given address (FloorModeFlag says which one).
const (
	FloorFlag     = "floor"
	FloorModeFlag = "floor-mode"
	FloorRunFlag  = "floor-run" // names the tenant, source and Redis keys
)

// A floor is the least an HTTP-to-broker service must do per request,
// served by a bare net/http handler in its own process: the ingress can be
// no faster than it on this machine, so a target above the floor is out of
// reach whatever ingress does.
type FloorMode string

const (
	// FloorPublish: one confirmed, persistent publish of the body to
	// hookyard.events, then 202.
	FloorPublish FloorMode = "publish"
	// FloorHeaders: the same as a binary-mode CloudEvent with the headers
	// ingress sets (publish.Encode), whose table amqp091 encodes per
	// message.
	FloorHeaders FloorMode = "headers"
	// FloorDedupe: FloorHeaders after one Redis SET NX of the event id
	// (the dedupe claim, one round trip per request).
	FloorDedupe FloorMode = "dedupe"
)

// FloorModes are the floors in the order the benchmark measures them.
var FloorModes = []FloorMode{FloorPublish, FloorHeaders, FloorDedupe}

func (m FloorMode) describe() string {
	switch m {
	case FloorPublish:
		return "floor: HTTP+publish"
	case FloorHeaders:
		return "floor: HTTP+publish+CE headers"
	case FloorDedupe:
		return "floor: HTTP+SET NX+publish+CE"
	}
	return "floor: " + string(m)
}

// FloorConfig configures a floor server.
type FloorConfig struct {
	Addr     string
	Mode     FloorMode
	AMQPURL  string
	RedisURL string
	Channels int    // confirm channels, as ingress
	Run      string // the benchmark run it measures for
}

// floorKeyPrefix is where the floor servers of run claim their ids.
func floorKeyPrefix(run string) string { return "hookyard:bench:floor:" + run + ":" }

// ServeFloor serves the floor handler on cfg.Addr until ctx ends. GET /readyz
// answers 200 once the broker (and Redis, for FloorDedupe) answered.
func ServeFloor(ctx context.Context, cfg FloorConfig) error {
	if err := loopbackAddr(cfg.Addr); err != nil {
		return err
	}
	switch cfg.Mode {
	case FloorPublish, FloorHeaders, FloorDedupe:
	default:
		return fmt.Errorf("floor mode %q: want publish, headers or dedupe", cfg.Mode)
	}
	conn := rabbit.DialConfig(ctx, cfg.AMQPURL, rabbit.Config{
		Name: "hookyard-ingress-bench-floor", Setup: rabbit.DeclareFunc(rabbit.DeclareTopology),
	})
	defer conn.Close()
	pub := rabbit.NewPublisher(conn, rabbit.PublisherConfig{Channels: cfg.Channels})
	defer pub.Close()
	var rdb redis.UniversalClient
	if cfg.Mode == FloorDedupe {
		var err error
		if rdb, err = redisconn.Open(cfg.RedisURL); err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		defer rdb.Close()
	}
	tenant, source, _ := floorNames(cfg.Run)
	keyPrefix := floorKeyPrefix(cfg.Run)
	key := publish.RoutingKey(source, EventType)
	var seq atomic.Uint64
	h := func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/readyz" {
			ready := conn.Check(r.Context()) == nil && (rdb == nil || rdb.Ping(r.Context()).Err() == nil)
			if !ready {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// A counter, not the body's id: finding the id is the
		// application's work, not the transport's.
		id := "floor_" + strconv.FormatUint(seq.Add(1), 10)
		msg := amqp.Publishing{ContentType: r.Header.Get("Content-Type"), MessageId: id, DeliveryMode: amqp.Persistent, Body: body}
		if cfg.Mode != FloorPublish {
			_, msg, err = publish.Encode(publish.Event{Tenant: tenant, Source: source, ID: id, Type: EventType, ContentType: msg.ContentType, Body: body})
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		if rdb != nil {
			fresh, err := rdb.SetNX(r.Context(), keyPrefix+id, 1, time.Hour).Result()
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			if !fresh {
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		if err := pub.Publish(r.Context(), rabbit.EventsExchange, key, msg); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
	return serve(ctx, cfg.Addr, http.HandlerFunc(h))
}

// loopbackAddr refuses any listen address but loopback: the floor and
// sink servers are measuring devices, never listeners for others.
func loopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("listen address %q: only loopback addresses are allowed", addr)
	}
	return nil
}

// serve serves h on addr until ctx ends.
func serve(ctx context.Context, addr string, h http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", addr, err)
	}
	return nil
}

// Floor is one floor's measured phase.
type Floor struct {
	Mode FloorMode
	Summary
}

// floorNames are what the floor servers of run publish as.
func floorNames(run string) (tenant, source, queue string) {
	return "benchfloor" + run, "bench-floor-" + run, "bench-floor-" + run
}

// floors measures each of cfg.Floors in a server process of its own, with
// the same load generator, concurrency, body and confirm channels as the
// ingress saturation phase, into a quorum queue of their own.
func floors(ctx context.Context, cfg Config, br *broker, conns int, run string, step func(string, ...any)) ([]Floor, error) {
	_, source, queue := floorNames(run)
	if err := br.declareQuorum(ctx, queue, source+".#"); err != nil {
		return nil, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		_ = br.deleteQueue(cctx, queue)
	}()
	var out []Floor
	offset := 0
	for _, mode := range cfg.Floors {
		s, err := floor(ctx, cfg, br, mode, queue, conns, run, offset, step)
		offset += cfg.Warmup + cfg.N
		out = append(out, Floor{Mode: mode, Summary: s})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func floor(ctx context.Context, cfg Config, br *broker, mode FloorMode, queue string, conns int, run string, offset int, step func(string, ...any)) (Summary, error) {
	name := fmt.Sprintf("%s C=%d", mode.describe(), cfg.Concurrency)
	s, err := serverPhase(ctx, cfg, server{
		label: string(mode) + " floor server", name: name,
		args: []string{"-" + FloorFlag, "-" + FloorModeFlag, string(mode), "-" + FloorRunFlag, run,
			"-publisher-channels", strconv.Itoa(cfg.PublisherChannels)},
		env:   []string{"HOOKYARD_AMQP_URL=" + cfg.AMQPURL, "HOOKYARD_REDIS_URL=" + cfg.RedisURL},
		ready: "/readyz", readyStatus: http.StatusOK,
		run: run + "f", offset: offset, conns: conns,
		warmed: func() error { return br.purge(ctx, queue) },
	}, step)
	if err != nil {
		return s, err
	}
	if err := expectDepth(ctx, br, queue, s.OK); err != nil {
		return s, fmt.Errorf("%s: %w", name, err)
	}
	return s, br.purge(ctx, queue)
}

// ParseFloors parses a comma-separated list of floor modes ("" is none).
func ParseFloors(list string) ([]FloorMode, error) {
	var out []FloorMode
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		m := FloorMode(f)
		if !slices.Contains(FloorModes, m) {
			return nil, fmt.Errorf("floor %q: want publish, headers or dedupe", f)
		}
		out = append(out, m)
	}
	return out, nil
}
