// Package jobs wires the jobs service: the task, canvas, worker, schedule
// and queue APIs, the schedule ticker, the built-in http task runner, the pump that hands due tasks to the
// broker and the reaper that enforces leases and hard time limits.
package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/config"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/jobs/internal/api"
	"github.com/hookyard/hookyard/services/jobs/internal/bus"
	"github.com/hookyard/hookyard/services/jobs/internal/httptask"
	"github.com/hookyard/hookyard/services/jobs/internal/runner"
	"github.com/hookyard/hookyard/services/jobs/internal/schedule"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
	"github.com/hookyard/hookyard/services/jobs/internal/trigger"
)

// Config holds the jobs service's own settings.
type Config struct {
	KeyPrefix       string
	QueuePrefix     string
	HTTPConcurrency int
	Heartbeat       time.Duration
	ResultTTL       time.Duration
	DeadTTL         time.Duration
	// MaxWaiters caps the WaitTask calls one replica serves at once.
	MaxWaiters int
	// EventsExchange receives the completion events (tests use their own).
	EventsExchange string
	// DispatcherAddr is the dispatcher's gRPC address, to which completion
	// callbacks are handed over (with ServiceKey); empty: the service
	// posts them itself.
	DispatcherAddr string
	ServiceKey     string
}

// Register adds the settings to l.
func (c *Config) Register(l *config.Loader) {
	l.String(&c.KeyPrefix, "key-prefix", "HOOKYARD_JOBS_KEY_PREFIX", "hookyard:jobs", "prefix of the jobs service's Redis keys")
	l.String(&c.QueuePrefix, "queue-prefix", "HOOKYARD_JOBS_QUEUE_PREFIX", "hookyard.jobs", "prefix of the jobs service's queue names")
	l.Int(&c.HTTPConcurrency, "http-concurrency", "HOOKYARD_JOBS_HTTP_CONCURRENCY", 64, "built-in http tasks run at once by one replica")
	l.Duration(&c.Heartbeat, "heartbeat", "HOOKYARD_JOBS_HEARTBEAT", 5*time.Second, "how often workers heartbeat; a lease not renewed for two intervals ends and the task runs elsewhere")
	l.Duration(&c.ResultTTL, "result-ttl", "HOOKYARD_JOBS_RESULT_TTL", 24*time.Hour, "how long succeeded and cancelled tasks (and results) are kept")
	l.Int(&c.MaxWaiters, "max-waiters", "HOOKYARD_JOBS_MAX_WAITERS", 10000, "WaitTask calls one replica serves at once; more are RESOURCE_EXHAUSTED")
	l.String(&c.DispatcherAddr, "dispatcher-addr", "HOOKYARD_DISPATCHER_ADDR", "", "the dispatcher's gRPC address (host:port): completion callbacks are handed to it and delivered with its retries and dead letters; empty: the jobs service posts them itself, without dead letters")
	l.String(&c.ServiceKey, "service-key", "HOOKYARD_SERVICE_KEY", "", "key for calls to the other Hookyard services (the dispatcher's CallbackService); required with -dispatcher-addr")
	l.Duration(&c.DeadTTL, "dead-ttl", "HOOKYARD_JOBS_DEAD_TTL", 7*24*time.Hour, "how long failed tasks are kept, listable and retryable")
}

// Deps are the shared connections.
type Deps struct {
	Rabbit     *rabbit.Conn
	Redis      redis.UniversalClient
	Log        *slog.Logger
	Registry   prometheus.Registerer
	AllowCIDRs string
}

// Jobs is the assembled service.
type Jobs struct {
	Config    Config
	Store     *store.Store
	Bus       *bus.Bus
	Publisher *rabbit.Publisher
	Pump      *runner.Pump
	Reaper    *runner.Reaper
	HTTP      *httptask.Runner
	Tasks     *api.Tasks
	Workers   *api.Workers
	Queues    *api.Queues
	Canvas    *api.Canvas
	Schedules *schedule.API
	Ticker    *schedule.Ticker
	Announcer *runner.Announcer
	Triggers  *trigger.API
	Trigger   *trigger.Consumer
	// dispatcher is the connection to the dispatcher, if configured.
	dispatcher *grpc.ClientConn
}

// New assembles the service.
func New(c Config, d Deps) (*Jobs, error) {
	allow, err := ssrf.ParseCIDRs(d.AllowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("HOOKYARD_ALLOW_CIDRS: %w", err)
	}
	if c.Heartbeat < 100*time.Millisecond {
		return nil, fmt.Errorf("heartbeat %s: at least 100ms", c.Heartbeat)
	}
	if c.HTTPConcurrency <= 0 {
		return nil, fmt.Errorf("http concurrency must be positive")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	policy := ssrf.Policy{Allow: allow}
	st := store.New(d.Redis, store.Config{Prefix: c.KeyPrefix, ResultTTL: c.ResultTTL, DeadTTL: c.DeadTTL, MaxWaiters: c.MaxWaiters, Observer: runner.NewMetrics(d.Registry)})
	pub := rabbit.NewPublisher(d.Rabbit, rabbit.PublisherConfig{})
	b := bus.New(d.Rabbit, pub, c.QueuePrefix)
	hub := runner.NewHub()
	pump := &runner.Pump{Store: st, Bus: b, Log: d.Log}
	j := &Jobs{Config: c, Store: st, Bus: b, Publisher: pub, Pump: pump}
	ended := j.ended
	j.Reaper = &runner.Reaper{Store: st, Hub: hub, Log: d.Log, Ended: ended}
	j.HTTP = &httptask.Runner{Store: st, Conn: d.Rabbit, Queue: b.HTTPQueue(), Policy: policy,
		Concurrency: c.HTTPConcurrency, Heartbeat: c.Heartbeat, Log: d.Log, Ended: ended}
	deps := api.Deps{Store: st, Pump: pump, Hub: hub, Bus: b, Policy: policy, Log: d.Log, HeartbeatInterval: c.Heartbeat, Ended: ended}
	j.Tasks = &api.Tasks{Deps: deps}
	j.Workers = &api.Workers{Deps: deps}
	j.Queues = &api.Queues{Deps: deps}
	j.Canvas = &api.Canvas{Deps: deps}
	exchange := c.EventsExchange
	if exchange == "" {
		exchange = rabbit.EventsExchange
	}
	j.Announcer = &runner.Announcer{Store: st, Publisher: pub, Exchange: exchange, Policy: policy, Log: d.Log}
	if c.DispatcherAddr != "" {
		if c.ServiceKey == "" {
			return nil, fmt.Errorf("HOOKYARD_DISPATCHER_ADDR is set but HOOKYARD_SERVICE_KEY is not: the dispatcher refuses callbacks without the service key")
		}
		// Lazy: no connection is made until the first callback, and a
		// dispatcher that is down only delays hand-overs.
		cc, err := grpc.NewClient(c.DispatcherAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.ServiceCredentials(c.ServiceKey)), trace.ClientOption(),
			// Reconnect within seconds of a dispatcher coming back, not
			// gRPC's default of up to two minutes.
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}}))
		if err != nil {
			return nil, fmt.Errorf("HOOKYARD_DISPATCHER_ADDR: %w", err)
		}
		j.dispatcher = cc
		j.Announcer.Dispatcher = dispatcherv1.NewCallbackServiceClient(cc)
	}
	ts := trigger.NewStore(st)
	j.Trigger = &trigger.Consumer{Store: ts, Conn: d.Rabbit, Queue: c.QueuePrefix + ".triggers", Exchange: exchange, Enqueue: j.Tasks.Enqueue, Log: d.Log, Publisher: pub}
	j.Triggers = &trigger.API{Store: ts, Consumer: j.Trigger, Validate: j.Tasks.Validate}
	ss := schedule.NewStore(st)
	j.Schedules = &schedule.API{Store: ss, Validate: j.Tasks.Validate}
	j.Ticker = &schedule.Ticker{Store: ss, Enqueue: j.Tasks.Enqueue, Log: d.Log}
	return j, nil
}

// Close closes the connection to the dispatcher, if any.
func (j *Jobs) Close() error {
	if j.dispatcher == nil {
		return nil
	}
	return j.dispatcher.Close()
}

// ended runs after any attempt ended.
func (j *Jobs) ended(_, _, state string) {
	if state == store.Pending {
		j.Pump.Wake()
	}
}

// Topology declares the service's fixed queues.
func (j *Jobs) Topology(ch *amqp.Channel) error {
	if err := j.Bus.Declare(ch); err != nil {
		return err
	}
	return j.Trigger.Declare(ch)
}

// Register adds the APIs to srv.
func (j *Jobs) Register(srv *server.Server) {
	jobsv1.RegisterTaskServiceServer(srv.GRPC, j.Tasks)
	jobsv1.RegisterWorkerServiceServer(srv.GRPC, j.Workers)
	jobsv1.RegisterScheduleServiceServer(srv.GRPC, j.Schedules)
	jobsv1.RegisterQueueServiceServer(srv.GRPC, j.Queues)
	jobsv1.RegisterTriggerServiceServer(srv.GRPC, j.Triggers)
	jobsv1.RegisterCanvasServiceServer(srv.GRPC, j.Canvas)
	srv.RegisterGateway(
		server.GatewayHandler(jobsv1.RegisterTaskServiceHandlerClient, jobsv1.NewTaskServiceClient),
		server.GatewayHandler(jobsv1.RegisterScheduleServiceHandlerClient, jobsv1.NewScheduleServiceClient),
		server.GatewayHandler(jobsv1.RegisterQueueServiceHandlerClient, jobsv1.NewQueueServiceClient),
		server.GatewayHandler(jobsv1.RegisterTriggerServiceHandlerClient, jobsv1.NewTriggerServiceClient),
		server.GatewayHandler(jobsv1.RegisterCanvasServiceHandlerClient, jobsv1.NewCanvasServiceClient),
	)
}

// Run runs the background loops until ctx ends.
func (j *Jobs) Run(ctx context.Context, grace time.Duration) error {
	loops := []func() error{
		func() error { return j.Pump.Run(ctx) },
		func() error { return j.Store.RunWaiters(ctx) },
		func() error { return j.Reaper.Run(ctx) },
		func() error { return j.Ticker.Run(ctx) },
		func() error { return j.Announcer.Run(ctx) },
		func() error { return j.Trigger.Run(ctx) },
		func() error { return j.HTTP.Run(ctx, grace) },
	}
	errc := make(chan error, len(loops))
	for _, f := range loops {
		go func() { errc <- f() }()
	}
	var first error
	for range loops {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Service describes the jobs binary.
func Service() app.Service {
	var c Config
	var j *Jobs
	return app.Service{
		Name:  "jobs",
		Ports: config.Ports{HTTP: ":8083", GRPC: ":9093"},
		Flags: c.Register,
		Topology: []func(*amqp.Channel) error{func(ch *amqp.Channel) error {
			if err := bus.New(nil, nil, c.QueuePrefix).Declare(ch); err != nil {
				return err
			}
			return (&trigger.Consumer{Queue: c.QueuePrefix + ".triggers", Exchange: rabbit.EventsExchange}).Declare(ch)
		}},
		Build: func(_ context.Context, rt *app.Runtime) error {
			var err error
			j, err = New(c, Deps{Rabbit: rt.Rabbit, Redis: rt.Redis, Log: rt.Log, Registry: rt.Registry, AllowCIDRs: rt.Config.AllowCIDRs})
			if err != nil {
				return err
			}
			rt.OnClose(j.Publisher.Close)
			rt.OnClose(j.Close)
			j.Register(rt.Server)
			rt.Go("jobs", func(ctx context.Context) error { return j.Run(ctx, rt.Config.ShutdownTimeout) })
			return nil
		},
	}
}
