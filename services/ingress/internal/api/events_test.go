package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/services/ingress/internal/api"
	"github.com/hookyard/hookyard/services/ingress/internal/ingress"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type eventsEnv struct {
	events  *api.Events
	sources *api.Sources
	ch      *amqp.Channel
	queue   string
}

// newEvents assembles the service as the binary does (ingress.New) over
// the real broker, with a private events exchange and a queue bound to
// everything, and real Redis under a private prefix.
func newEvents(t *testing.T) *eventsEnv {
	t.Helper()
	rdb, prefix := redistest.New(t, "events")
	topo := rabbit.Topology{Events: rabbittest.UniqueName(t, "events"), Unrouted: rabbittest.UniqueName(t, "unrouted")}
	ctx, cancel := context.WithCancel(context.Background())
	conn := rabbit.DialConfig(ctx, rabbittest.URL(), rabbit.Config{Setup: rabbit.DeclareFunc(topo.Declare)})
	in := ingress.New(ingress.Config{
		PublisherChannels: 1, KeyPrefix: prefix, DedupePrefix: prefix + ":dedupe",
		Exchange: topo.Events, ConfirmTimeout: 5 * time.Second,
	}, ingress.Deps{Rabbit: conn, Redis: rdb})
	t.Cleanup(func() { in.Publisher.Close(); conn.Close(); cancel() })

	admin, err := amqp.Dial(rabbittest.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	ch, err := admin.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Declare(ch); err != nil {
		t.Fatal(err)
	}
	q := rabbittest.TempQueue(t, ch, "q")
	if err := ch.QueueBind(q, "#", topo.Events, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(topo.Unrouted, false, false, false)
		_ = ch.ExchangeDelete(topo.Events, false, false)
		_ = ch.ExchangeDelete(topo.Unrouted, false, false)
	})
	return &eventsEnv{events: in.EventAPI, sources: in.SourceAPI, ch: ch, queue: q}
}

func (e *eventsEnv) next(t *testing.T, wait time.Duration) (amqp.Delivery, bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		d, ok, err := e.ch.Get(e.queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return d, true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return amqp.Delivery{}, false
}

// An internal publish may not pass itself off as another tenant's webhook
// source, as a provider, or as Hookyard; every event names its tenant.
func TestPublishRefusesForgedSources(t *testing.T) {
	e := newEvents(t)
	acme := auth.WithTenant(context.Background(), "acme")
	globex := auth.WithTenant(context.Background(), "globex")
	theirs := fmt.Sprintf("globex-shop-%d", time.Now().UnixNano())
	if _, err := e.sources.CreateSource(globex, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
		Name: theirs, Provider: "shopify", Secrets: []string{"whsec_abcdefghijklmnop1234"},
	}}); err != nil {
		t.Fatal(err)
	}

	for _, src := range []string{theirs, "stripe", "github", "hookyard"} {
		_, err := e.events.Publish(acme, &ingressv1.PublishRequest{Source: src, Type: "order.paid", Id: "forged-" + src})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("acme publishing as %q: %v, want PermissionDenied", src, err)
		}
	}
	if d, ok := e.next(t, time.Second); ok {
		t.Fatalf("a forged event reached the bus: %s %v", d.RoutingKey, d.Headers)
	}

	// The owner may publish under its own source, and a provider name is
	// fine for the tenant owning a webhook source of that name.
	if _, err := e.events.Publish(globex, &ingressv1.PublishRequest{Source: theirs, Type: "order.paid", Id: "own-1"}); err != nil {
		t.Fatalf("owner publishing under its source: %v", err)
	}
	d, ok := e.next(t, 5*time.Second)
	if !ok {
		t.Fatal("the owner's event did not arrive")
	}
	if d.Headers[cloudevent.HeaderTenant] != "globex" || d.RoutingKey != theirs+".order.paid" {
		t.Fatalf("event: key %q headers %v", d.RoutingKey, d.Headers)
	}
	// The default source is everyone's.
	if _, err := e.events.Publish(acme, &ingressv1.PublishRequest{Type: "user.created", Id: "u-1"}); err != nil {
		t.Fatalf("default source: %v", err)
	}
	if d, ok := e.next(t, 5*time.Second); !ok || d.Headers[cloudevent.HeaderTenant] != "acme" || d.RoutingKey != "app.user.created" {
		t.Fatalf("default-source event: %v %q %v", ok, d.RoutingKey, d.Headers)
	}
	// A provider's name is usable by the tenant owning a webhook source of
	// that name (names are global, so only one tenant can).
	if _, err := e.sources.CreateSource(acme, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
		Name: "github", Provider: "github", Secrets: []string{"whsec_abcdefghijklmnop1234"},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.events.Publish(acme, &ingressv1.PublishRequest{Source: "github", Type: "push", Id: "p-1"}); err != nil {
		t.Fatalf("owner of source github: %v", err)
	}
	if _, err := e.events.Publish(globex, &ingressv1.PublishRequest{Source: "github", Type: "push", Id: "p-2"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("globex as github: %v, want PermissionDenied", err)
	}
}

// The Publish API follows the shared id rules: an id that cannot be used
// everywhere downstream is refused with a reason.
func TestPublishIDRules(t *testing.T) {
	e := newEvents(t)
	acme := auth.WithTenant(context.Background(), "acme")
	for _, id := range []string{"a/b", "a b", "a\r\nb", strings.Repeat("i", publish.MaxIDLen+1)} {
		if _, err := e.events.Publish(acme, &ingressv1.PublishRequest{Type: "user.created", Id: id}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("id %q: %v, want InvalidArgument", id, err)
		}
	}
	if d, ok := e.next(t, time.Second); ok {
		t.Fatalf("refused id reached the bus: %q", d.MessageId)
	}
}
