// Package dispatcher wires the dispatcher service: the endpoint and message
// APIs, the fan-out consumer and the delivery workers, over one publisher,
// one Redis and one SSRF policy.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/config"
	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/api"
	"github.com/hookyard/hookyard/services/dispatcher/internal/deadletter"
	"github.com/hookyard/hookyard/services/dispatcher/internal/deliver"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/fanout"
	"github.com/hookyard/hookyard/services/dispatcher/internal/listen"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/metrics"
	"github.com/hookyard/hookyard/services/dispatcher/internal/retry"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
)

// Config holds the dispatcher's own settings.
type Config struct {
	RetrySchedule      string
	Retention          time.Duration
	AutoDisableAfter   time.Duration
	DefaultMaxInFlight int
	DefaultTimeout     time.Duration
	RotationOverlap    time.Duration
	Concurrency        int
	BreakerFailures    int
	BreakerTimeout     time.Duration
	QueuePrefix        string
	KeyPrefix          string
	EventBindings      string
	// SourcesKeyPrefix is where the ingress service keeps webhook sources
	// (their owners decide who may send under a source name), and
	// EventIDsKeyPrefix where published event ids are remembered, shared
	// with the ingress service so an id is one id however it was sent.
	SourcesKeyPrefix  string
	EventIDsKeyPrefix string
	ShutdownGrace     time.Duration
	// ListenWindow is how long a tenant's events are kept for an event
	// stream (hookyard listen, tail) to resume after it dropped.
	ListenWindow time.Duration
	// FirstAttemptBudget is how long the fan-out waits for the first
	// attempts it makes itself (the fast path); 0 publishes a task for
	// every delivery instead.
	FirstAttemptBudget time.Duration
	// ServiceKey authenticates the other services' calls of
	// CallbackService; empty refuses them.
	ServiceKey string
	// IdleConnsPerHost and IdleConns cap the connections to subscribers
	// kept open between attempts, per host and in all (0: the defaults).
	IdleConnsPerHost int
	IdleConns        int
}

// Defaults of Config.IdleConnsPerHost and Config.IdleConns: as many
// connections as the attempts that can be in flight to one host (a burst
// of fan-outs to endpoints on one host), so that a burst reuses the
// connections of the one before instead of dialling again.
const (
	DefaultIdleConnsPerHost = 1024
	DefaultIdleConns        = 4096
)

// Register adds the settings to l.
func (c *Config) Register(l *config.Loader) {
	l.String(&c.RetrySchedule, "retry-schedule", "HOOKYARD_RETRY_SCHEDULE", retry.DefaultSchedule, "retry delays after the first attempt")
	l.Duration(&c.Retention, "retention", "HOOKYARD_DISPATCHER_RETENTION", 30*24*time.Hour, "how long messages, attempts and dead letters are kept")
	l.Duration(&c.AutoDisableAfter, "auto-disable-after", "HOOKYARD_DISPATCHER_AUTO_DISABLE_AFTER", 5*24*time.Hour, "disable an endpoint that has failed continuously this long (0 never)")
	l.Int(&c.DefaultMaxInFlight, "default-max-in-flight", "HOOKYARD_DISPATCHER_MAX_IN_FLIGHT", endpoint.DefaultMaxInFlight, "concurrent requests per endpoint unless the endpoint sets its own")
	l.Duration(&c.DefaultTimeout, "default-timeout", "HOOKYARD_DISPATCHER_TIMEOUT", ssrf.DefaultTimeout, "request timeout unless the endpoint sets its own")
	l.Duration(&c.RotationOverlap, "rotation-overlap", "HOOKYARD_DISPATCHER_ROTATION_OVERLAP", 24*time.Hour, "how long a rotated-out secret keeps signing")
	l.Int(&c.Concurrency, "concurrency", "HOOKYARD_DISPATCHER_CONCURRENCY", 256, "delivery tasks handled at once by one replica")
	l.Int(&c.BreakerFailures, "breaker-failures", "HOOKYARD_DISPATCHER_BREAKER_FAILURES", 5, "consecutive failures that open an endpoint's circuit breaker")
	l.Duration(&c.BreakerTimeout, "breaker-timeout", "HOOKYARD_DISPATCHER_BREAKER_TIMEOUT", 30*time.Second, "how long an open breaker waits before probing")
	l.String(&c.QueuePrefix, "queue-prefix", "HOOKYARD_DISPATCHER_QUEUE_PREFIX", "hookyard.dispatcher", "prefix of the dispatcher's queue names")
	l.String(&c.KeyPrefix, "key-prefix", "HOOKYARD_DISPATCHER_KEY_PREFIX", "hookyard:dispatcher", "prefix of the dispatcher's Redis keys")
	l.String(&c.SourcesKeyPrefix, "sources-key-prefix", "HOOKYARD_SOURCES_KEY_PREFIX", publish.SourcesPrefix, "prefix of the Redis keys of the ingress service's webhook sources, whose owners decide who may send under a source name")
	l.String(&c.EventIDsKeyPrefix, "event-ids-key-prefix", "HOOKYARD_EVENT_IDS_KEY_PREFIX", publish.DedupePrefix, "prefix of the Redis keys remembering published event ids, shared with the ingress service")
	l.Duration(&c.ShutdownGrace, "shutdown-grace", "HOOKYARD_DISPATCHER_SHUTDOWN_GRACE", endpoint.MaxTimeout+5*time.Second, "how long attempts in flight may run on after SIGTERM before they are cut and returned; at least the longest endpoint timeout, so that a deploy does not cut (and later repeat) a delivery the subscriber is processing")
	l.Duration(&c.ListenWindow, "listen-window", "HOOKYARD_DISPATCHER_LISTEN_WINDOW", listen.DefaultWindow, "how long after its last event stream (hookyard listen, tail) ends a tenant's events are still kept, so a dropped stream resumes without a loss")
	l.Duration(&c.FirstAttemptBudget, "first-attempt-budget", "HOOKYARD_DISPATCHER_FIRST_ATTEMPT_BUDGET", fanout.DefaultFirstAttemptBudget, "how long the fan-out waits for the first attempt of each delivery, made without a delivery task; an attempt still running then (or failing, or held back by a limit) continues through a durable task. 0 turns this off: every delivery goes through a task")
	l.String(&c.ServiceKey, "service-key", "HOOKYARD_SERVICE_KEY", "", "key the other Hookyard services call CallbackService with (the jobs service's completion callbacks); none refuses those calls")
	l.Int(&c.IdleConnsPerHost, "idle-conns-per-host", "HOOKYARD_DISPATCHER_IDLE_CONNS_PER_HOST", DefaultIdleConnsPerHost, "connections to one subscriber host kept open between attempts")
	l.Int(&c.IdleConns, "idle-conns", "HOOKYARD_DISPATCHER_IDLE_CONNS", DefaultIdleConns, "connections to subscribers kept open between attempts, all hosts together")
	l.String(&c.EventBindings, "event-bindings", "HOOKYARD_DISPATCHER_EVENT_BINDINGS", "#", "comma-separated routing patterns the dispatcher consumes from hookyard.events")
}

// Queues returns the queue names of c.
func (c *Config) Queues() task.Queues {
	var b []string
	for p := range strings.SplitSeq(c.EventBindings, ",") {
		if p = strings.TrimSpace(p); p != "" {
			b = append(b, p)
		}
	}
	return task.NewQueues(c.QueuePrefix, b)
}

// Deps are the shared connections.
type Deps struct {
	Rabbit     *rabbit.Conn
	Redis      redis.UniversalClient
	Log        *slog.Logger
	Registry   prometheus.Registerer
	AllowCIDRs string
	// APIKeys are the tenants' keys (HOOKYARD_API_KEYS): CallbackService
	// answers them PermissionDenied.
	APIKeys auth.Keys
}

// Dispatcher is the assembled service.
type Dispatcher struct {
	Endpoints *api.Endpoints
	Messages  *api.Messages
	Callbacks *api.Callbacks
	Queues    *api.Queues
	Fanout    *fanout.Fanout
	Worker    *deliver.Worker
	// DeadLetters records what the broker dead-letters.
	DeadLetters *deadletter.Consumer
	// Listen serves event streams (hookyard listen and tail).
	Listen    *listen.Hub
	Publisher *rabbit.Publisher
	rabbit    *rabbit.Conn
	// ids remembers published ids; SendMessage queues its writes to it
	// without waiting, so Close flushes them.
	ids *dedupe.Store
}

// New assembles a Dispatcher.
func New(c Config, d Deps) (*Dispatcher, error) {
	schedule, err := retry.ParseSchedule(c.RetrySchedule)
	if err != nil {
		return nil, fmt.Errorf("HOOKYARD_RETRY_SCHEDULE: %w", err)
	}
	allow, err := ssrf.ParseCIDRs(d.AllowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("HOOKYARD_ALLOW_CIDRS: %w", err)
	}
	if c.Retention <= 0 {
		return nil, fmt.Errorf("retention must be positive, got %s", c.Retention)
	}
	var total time.Duration
	for _, d := range schedule {
		total += d
	}
	if total >= c.Retention {
		return nil, fmt.Errorf("HOOKYARD_RETRY_SCHEDULE adds up to %s, which must be less than the retention %s (HOOKYARD_DISPATCHER_RETENTION)", total, c.Retention)
	}
	if c.DefaultMaxInFlight <= 0 || c.DefaultTimeout <= 0 {
		return nil, fmt.Errorf("default max in-flight and timeout must be positive")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	policy := ssrf.Policy{Allow: allow}
	q := c.Queues()
	eps := endpoint.New(d.Redis, c.KeyPrefix)
	msgs := message.New(d.Redis, c.KeyPrefix, c.Retention)
	gate := admit.New(d.Redis, c.KeyPrefix, c.Retention)
	pub := rabbit.NewPublisher(d.Rabbit, rabbit.PublisherConfig{})
	// Published ids are remembered as long as messages are kept, so an id
	// is answered as a duplicate, never accepted and then taken for a
	// replay by the fan-out.
	idsPrefix, sources := c.EventIDsKeyPrefix, c.SourcesKeyPrefix
	if idsPrefix == "" {
		idsPrefix = publish.DedupePrefix
	}
	if sources == "" {
		sources = publish.SourcesPrefix
	}
	ids := dedupe.New(d.Redis, idsPrefix)
	ids.Log = d.Log
	m := metrics.New(d.Registry)
	if d.Redis != nil {
		d.Redis.AddHook(m.CountRoundTrips())
	}
	client := deliveryClient(policy, c)
	w := deliver.NewWorker(deliver.Config{
		Schedule: schedule, DefaultTimeout: c.DefaultTimeout, DefaultMaxInFlight: c.DefaultMaxInFlight,
		AutoDisableAfter: c.AutoDisableAfter, BreakerFailures: uint32(max(c.BreakerFailures, 1)),
		BreakerTimeout: c.BreakerTimeout, Concurrency: c.Concurrency, ShutdownGrace: c.ShutdownGrace,
	}, q, eps, msgs, gate, pub, client, m, d.Log)
	f := fanout.New(q, eps, msgs, pub, m, d.Log)
	if c.FirstAttemptBudget > 0 {
		f.First, f.FirstAttemptBudget = w, c.FirstAttemptBudget
	}
	f.ShutdownGrace = w.ShutdownGrace()
	hub := listen.New(d.Redis, c.KeyPrefix, msgs, listen.Config{Window: c.ListenWindow}, d.Log)
	msgs.OnAttempt, f.OnEvent = hub.QueueAttempt, hub.Event
	deps := api.Deps{
		Endpoints: eps, Messages: msgs, Gate: gate, Fanout: f, Publisher: pub, Policy: policy,
		Events:          publish.New(pub, ids, publish.NewOwners(d.Redis, sources), publish.Config{Remember: c.Retention}),
		RotationOverlap: c.RotationOverlap,
		Retention:       c.Retention, Log: d.Log,
		DefaultMaxInFlight: c.DefaultMaxInFlight, DefaultTimeout: c.DefaultTimeout,
	}
	return &Dispatcher{
		Endpoints: &api.Endpoints{Deps: deps},
		Messages:  &api.Messages{Deps: deps},
		Callbacks: &api.Callbacks{Deps: deps, ServiceKey: c.ServiceKey, TenantKeys: d.APIKeys},
		Queues:    &api.Queues{Rabbit: d.Rabbit, Names: q},
		Fanout:    f, Worker: w, Publisher: pub, rabbit: d.Rabbit, Listen: hub, ids: ids,
		DeadLetters: deadletter.New(q, f, msgs, gate, pub, m, d.Log),
	}, nil
}

// deliveryClient is the SSRF-safe client of every attempt.
func deliveryClient(policy ssrf.Policy, c Config) *http.Client {
	perHost, all := c.IdleConnsPerHost, c.IdleConns
	if perHost <= 0 {
		perHost = DefaultIdleConnsPerHost
	}
	if all <= 0 {
		all = DefaultIdleConns
	}
	return policy.Client(ssrf.ClientOptions{Timeout: endpoint.MaxTimeout, MaxIdleConnsPerHost: perHost, MaxIdleConns: max(all, perHost)})
}

// Register adds the endpoint, message and queue services to srv, on gRPC and on
// the REST gateway.
func (d *Dispatcher) Register(srv *server.Server) {
	dispatcherv1.RegisterEndpointServiceServer(srv.GRPC, d.Endpoints)
	dispatcherv1.RegisterMessageServiceServer(srv.GRPC, d.Messages)
	dispatcherv1.RegisterEventStreamServiceServer(srv.GRPC, d.Listen)
	dispatcherv1.RegisterQueueServiceServer(srv.GRPC, d.Queues)
	// gRPC only, authenticated with the service key (see Public).
	dispatcherv1.RegisterCallbackServiceServer(srv.GRPC, d.Callbacks)
	srv.RegisterGateway(server.GatewayHandler(dispatcherv1.RegisterEndpointServiceHandlerClient, dispatcherv1.NewEndpointServiceClient), server.GatewayHandler(dispatcherv1.RegisterMessageServiceHandlerClient, dispatcherv1.NewMessageServiceClient), server.GatewayHandler(dispatcherv1.RegisterQueueServiceHandlerClient, dispatcherv1.NewQueueServiceClient))
}

// RunFanout consumes events until ctx ends.
func (d *Dispatcher) RunFanout(ctx context.Context) error { return d.Fanout.Run(ctx, d.rabbit) }

// RunDeliveries consumes delivery tasks until ctx ends.
func (d *Dispatcher) RunDeliveries(ctx context.Context) error { return d.Worker.Run(ctx, d.rabbit) }

// RunDeadLetters records the broker's dead letters until ctx ends.
func (d *Dispatcher) RunDeadLetters(ctx context.Context) error {
	return d.DeadLetters.Run(ctx, d.rabbit)
}

// Public lists the methods the tenant key check leaves to the method:
// CallbackService checks the service key itself.
var Public = []string{"/" + dispatcherv1.CallbackService_ServiceDesc.ServiceName + "/"}

// Close runs after the last request and worker, before the connections
// close: it waits for the ids SendMessage remembers without waiting to
// reach Redis (a lost one would let a retry of an acknowledged message be
// published again), then closes the publisher.
func (d *Dispatcher) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(d.ids.Flush(ctx), d.Publisher.Close())
}

// Service describes the dispatcher binary.
func Service() app.Service {
	var c Config
	return app.Service{
		Name:     "dispatcher",
		Ports:    config.Ports{HTTP: ":8081", GRPC: ":9091"},
		Flags:    c.Register,
		Public:   Public,
		Topology: []func(*amqp.Channel) error{func(ch *amqp.Channel) error { return c.Queues().Declare(ch) }},
		Build: func(_ context.Context, rt *app.Runtime) error {
			keys, err := auth.ParseKeys(rt.Config.APIKeys)
			if err != nil {
				return err
			}
			d, err := New(c, Deps{Rabbit: rt.Rabbit, Redis: rt.Redis, Log: rt.Log, Registry: rt.Registry, AllowCIDRs: rt.Config.AllowCIDRs, APIKeys: keys})
			if err != nil {
				return err
			}
			// The app waits for the attempts in flight, and for writing
			// down their outcome, before it closes the connections.
			rt.WaitForWorkers(d.Worker.ShutdownGrace() + 10*time.Second)
			rt.OnClose(d.Close)
			d.Register(rt.Server)
			rt.Go("fanout", d.RunFanout)
			rt.Go("deliveries", d.RunDeliveries)
			rt.Go("deadletters", d.RunDeadLetters)
			rt.Go("listen", d.Listen.Run)
			return nil
		},
	}
}
