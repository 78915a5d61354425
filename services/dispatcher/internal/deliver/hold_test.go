package deliver

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/metrics"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// hookPublisher records publishes and runs onDisabled when the
// endpoint.disabled event is published.
type hookPublisher struct {
	mu         sync.Mutex
	keys       []string
	onDisabled func()
}

func (p *hookPublisher) Publish(_ context.Context, exchange, key string, _ amqp.Publishing) error {
	p.mu.Lock()
	p.keys = append(p.keys, key)
	f := p.onDisabled
	p.mu.Unlock()
	if exchange == rabbit.EventsExchange && f != nil {
		f()
	}
	return nil
}

// A worker that read its endpoint as disabled holds the task; if the
// endpoint was re-enabled, and its held set listed, between that read and
// the hold, the task must not be stranded in the held set: the worker
// sends it itself.
func TestHoldRacingRecoverStrandsNothing(t *testing.T) {
	id := testenv.ID()
	prefix := testenv.KeyPrefix(id)
	rdb := testenv.Redis(t, prefix)
	ctx := context.Background()
	eps := endpoint.New(rdb, prefix)
	msgs := message.New(rdb, prefix, time.Hour)
	gate := admit.New(rdb, prefix, time.Hour)
	const tenant = "acme"
	ep, err := eps.Create(ctx, tenant, &dispatcherv1.Endpoint{Url: "https://example.com/hook"})
	if err != nil {
		t.Fatal(err)
	}
	// Disabled, with its announcement still owed.
	if _, _, err := eps.Disable(ctx, tenant, ep.GetId(), endpoint.ReasonGone); err != nil {
		t.Fatal(err)
	}
	m := &message.Message{ID: "m1", Source: "app", Type: "a", RoutingKey: "app.a", CreateTime: time.Now(), Body: []byte(`{}`)}
	if _, err := msgs.Record(ctx, tenant, m); err != nil {
		t.Fatal(err)
	}
	q := task.NewQueues("hookyard.test."+id, nil)
	pub := &hookPublisher{}
	var listed []string
	pub.onDisabled = func() {
		// :recover runs here, after the worker read the endpoint as
		// disabled and before it holds the task.
		if _, err := eps.Modify(ctx, tenant, ep.GetId(), func(r *endpoint.Record) error {
			r.Endpoint.Disabled, r.Endpoint.DisabledReason = false, ""
			return nil
		}); err != nil {
			t.Error(err)
		}
		listed, _ = msgs.Held(ctx, tenant, ep.GetId())
	}
	w := NewWorker(Config{DefaultTimeout: time.Second, DefaultMaxInFlight: 1}, q, eps, msgs, gate, pub, http.DefaultClient, metrics.New(nil), slog.New(slog.DiscardHandler))
	tk := &task.Task{Tenant: tenant, Message: m.ID, Endpoint: ep.GetId(), RoutingKey: m.RoutingKey, Body: m.Body}
	p := tk.Publishing()
	w.Handle(ctx, amqp.Delivery{Headers: p.Headers, MessageId: p.MessageId, Body: p.Body})

	if len(listed) != 0 {
		t.Fatalf("recover listed %v before the hold", listed)
	}
	held, err := msgs.Held(ctx, tenant, ep.GetId())
	if err != nil {
		t.Fatal(err)
	}
	requeued := false
	for _, k := range pub.keys {
		if k == q.Deliveries {
			requeued = true
		}
	}
	if len(held) != 0 || !requeued {
		t.Fatalf("after racing a recover: held %v, task sent again %v (publishes %v)", held, requeued, pub.keys)
	}
}
