// Package ingress wires the ingress service: the webhook receiver, the
// sources API and internal publishing, over one publisher and one Redis.
package ingress

import (
	"context"
	"net/http"
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/platform/config"
	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/ingress/internal/api"
	"github.com/hookyard/hookyard/services/ingress/internal/ingest"
	"github.com/hookyard/hookyard/services/ingress/internal/receive"
	"github.com/hookyard/hookyard/services/ingress/internal/source"
)

// KeyPrefix starts the Redis keys of the ingress service's sources. The
// dispatcher reads source owners under it (publish.SourcesPrefix); the
// published ids live under publish.DedupePrefix, shared with it.
const KeyPrefix = publish.SourcesPrefix

// Service describes the ingress binary.
func Service() app.Service {
	var (
		publisherChannels int
		idRetention       time.Duration
	)
	return app.Service{
		Name:  "ingress",
		Ports: config.Ports{HTTP: ":8080", GRPC: ":9090"},
		Flags: func(l *config.Loader) {
			l.Int(&publisherChannels, "publisher-channels", "HOOKYARD_PUBLISHER_CHANNELS", rabbit.DefaultPublisherChannels, "confirm-mode channels for publishing")
			l.Duration(&idRetention, "event-id-retention", "HOOKYARD_EVENT_ID_RETENTION", publish.DefaultRemember, "how long published event ids are remembered; keep it at least HOOKYARD_DISPATCHER_RETENTION")
		},
		Build: func(_ context.Context, rt *app.Runtime) error {
			pub := rabbit.NewPublisher(rt.Rabbit, rabbit.PublisherConfig{Channels: publisherChannels})
			rt.OnClose(pub.Close)
			sources := source.New(rt.Redis, KeyPrefix)
			// Source changes made through any replica end this one's
			// cached copies.
			rt.Go("source-changes", sources.Run)
			in := ingest.New(pub, dedupe.New(rt.Redis, publish.DedupePrefix), rt.Log, rt.Registry)
			in.Owners = publish.NewOwners(rt.Redis, KeyPrefix)
			in.Remember = idRetention

			ingressv1.RegisterSourceServiceServer(rt.Server.GRPC, &api.Sources{Store: sources})
			ingressv1.RegisterEventServiceServer(rt.Server.GRPC, &api.Events{Ingest: in})
			rt.Server.RegisterGateway(ingressv1.RegisterSourceServiceHandler, ingressv1.RegisterEventServiceHandler)
			recv := receive.New(sources, in, rt.Log, rt.Registry)
			recv.Bodies = rt.Server.Bodies()
			rt.Server.Handle("POST /webhooks/{source}", recv)
			rt.Server.Handle("/webhooks/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusMethodNotAllowed)
				_, _ = w.Write([]byte(`{"error":"webhooks are received with POST /webhooks/{source}"}` + "\n"))
			}))
			return nil
		},
	}
}
