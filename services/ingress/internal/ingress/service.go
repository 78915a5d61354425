// Package ingress wires the ingress service: the webhook receiver, the
// sources API and internal publishing, over one publisher and one Redis.
// The binary and the tests assemble it the same way, through New.
package ingress

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/platform/config"
	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/tally"
	"github.com/hookyard/hookyard/services/ingress/internal/api"
	"github.com/hookyard/hookyard/services/ingress/internal/ingest"
	"github.com/hookyard/hookyard/services/ingress/internal/receive"
	"github.com/hookyard/hookyard/services/ingress/internal/source"
)

// KeyPrefix starts the Redis keys of the ingress service's sources. The
// dispatcher reads source owners under it (publish.SourcesPrefix); the
// published ids live under publish.DedupePrefix, shared with it.
const KeyPrefix = publish.SourcesPrefix

// Config holds the ingress service's own settings. The zero values of the
// names are the production ones; tests set their own.
type Config struct {
	PublisherChannels int
	EventIDRetention  time.Duration
	// KeyPrefix is where sources are kept (KeyPrefix), DedupePrefix where
	// published ids are remembered (publish.DedupePrefix) and Exchange
	// where events go (rabbit.EventsExchange).
	KeyPrefix, DedupePrefix, Exchange string
	// ConfirmTimeout bounds the wait for the broker (default 10s).
	ConfirmTimeout time.Duration
}

// Register adds the settings to l.
func (c *Config) Register(l *config.Loader) {
	l.Int(&c.PublisherChannels, "publisher-channels", "HOOKYARD_PUBLISHER_CHANNELS", rabbit.DefaultPublisherChannels, "confirm-mode channels for publishing")
	l.Duration(&c.EventIDRetention, "event-id-retention", "HOOKYARD_EVENT_ID_RETENTION", publish.DefaultRemember, "how long published event ids are remembered; keep it at least HOOKYARD_DISPATCHER_RETENTION")
}

// Deps are the shared connections. Bodies, when set, is the server's
// budget for request bodies, which webhook bodies share.
type Deps struct {
	Rabbit   *rabbit.Conn
	Redis    redis.UniversalClient
	Log      *slog.Logger
	Registry prometheus.Registerer
	Bodies   *server.BodyBudget
}

// Ingress is the assembled service.
type Ingress struct {
	Sources   *source.Store
	Ingest    *ingest.Ingester
	Receiver  *receive.Handler
	SourceAPI *api.Sources
	EventAPI  *api.Events
	Publisher *rabbit.Publisher
	// IDs remembers published ids; its confirms are sent after the
	// answers, so Close flushes them.
	IDs *dedupe.Store
	// Stats counts webhooks per source; RunStats writes the counts.
	Stats *tally.Tally
}

// New assembles an Ingress.
func New(c Config, d Deps) *Ingress {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	keys, ids := or(c.KeyPrefix, KeyPrefix), or(c.DedupePrefix, publish.DedupePrefix)
	pub := rabbit.NewPublisher(d.Rabbit, rabbit.PublisherConfig{Channels: c.PublisherChannels})
	sources := source.New(d.Redis, keys)
	idStore := dedupe.New(d.Redis, ids)
	in := ingest.New(pub, idStore, d.Log, d.Registry)
	in.Owners = publish.NewOwners(d.Redis, keys)
	in.Remember = c.EventIDRetention
	in.Exchange = or(c.Exchange, ingest.Exchange)
	if c.ConfirmTimeout > 0 {
		in.ConfirmTimeout = c.ConfirmTimeout
	}
	recv := receive.New(sources, in, d.Log, d.Registry)
	recv.Bodies = d.Bodies
	recv.Stats = tally.New(d.Redis)
	return &Ingress{
		Sources: sources, Ingest: in, Receiver: recv, Publisher: pub, IDs: idStore, Stats: recv.Stats,
		SourceAPI: &api.Sources{Store: sources}, EventAPI: &api.Events{Ingest: in},
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Webhooks serves /webhooks/: POST /webhooks/{source}, and 405 with a hint
// for any other method.
func (i *Ingress) Webhooks() http.Handler {
	mux := http.NewServeMux()
	i.webhookRoutes(mux.Handle)
	return mux
}

func (i *Ingress) webhookRoutes(handle func(pattern string, h http.Handler)) {
	handle("POST /webhooks/{source}", i.Receiver)
	handle("/webhooks/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte(`{"error":"webhooks are received with POST /webhooks/{source}"}` + "\n"))
	}))
}

// Register adds the sources and events services to srv, on gRPC and on the
// REST gateway, and the webhook routes.
func (i *Ingress) Register(srv *server.Server) {
	ingressv1.RegisterSourceServiceServer(srv.GRPC, i.SourceAPI)
	ingressv1.RegisterEventServiceServer(srv.GRPC, i.EventAPI)
	srv.RegisterGateway(server.GatewayHandler(ingressv1.RegisterSourceServiceHandlerClient, ingressv1.NewSourceServiceClient), server.GatewayHandler(ingressv1.RegisterEventServiceHandlerClient, ingressv1.NewEventServiceClient))
	i.webhookRoutes(srv.Handle)
}

// RunSourceChanges follows source changes made through any replica, ending
// this one's cached copies, until ctx ends.
func (i *Ingress) RunSourceChanges(ctx context.Context) error { return i.Sources.Run(ctx) }

// flushIDs sends the dedupe confirms still queued when the server stopped,
// so a replay after a clean restart is answered as a duplicate.
func (i *Ingress) flushIDs() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return i.IDs.Flush(ctx)
}

// RunStats writes the webhook counters once a second until ctx ends.
func (i *Ingress) RunStats(ctx context.Context, log *slog.Logger) error {
	i.Stats.Run(ctx, func(err error) { log.WarnContext(ctx, "webhook counters", "err", err) })
	return nil
}

// Service describes the ingress binary.
func Service() app.Service {
	var c Config
	return app.Service{
		Name:  "ingress",
		Ports: config.Ports{HTTP: ":8080", GRPC: ":9090"},
		Flags: c.Register,
		Build: func(_ context.Context, rt *app.Runtime) error {
			in := New(c, Deps{Rabbit: rt.Rabbit, Redis: rt.Redis, Log: rt.Log, Registry: rt.Registry, Bodies: rt.Server.Bodies()})
			rt.OnClose(in.Publisher.Close)
			rt.OnClose(in.flushIDs)
			in.Register(rt.Server)
			rt.Go("source-changes", in.RunSourceChanges)
			rt.Go("source-stats", func(ctx context.Context) error { return in.RunStats(ctx, rt.Log) })
			return nil
		},
	}
}
