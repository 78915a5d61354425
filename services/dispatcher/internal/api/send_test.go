package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// watch binds a queue of the test's own to pattern on hookyard.events and
// returns a function fetching the next message (false after wait).
func watch(t *testing.T, pattern string) func(wait time.Duration) (amqp.Delivery, bool) {
	t.Helper()
	conn, err := amqp.Dial(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, pattern, rabbit.EventsExchange, false, nil); err != nil {
		t.Fatal(err)
	}
	return func(wait time.Duration) (amqp.Delivery, bool) {
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) {
			d, ok, err := ch.Get(q.Name, true)
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
}

// Two sources may use the same id: the second send is published too, not
// answered with success and dropped.
func TestSendMessageSameIDOtherSource(t *testing.T) {
	e := start(t)
	ctx := as(e.acme.key)
	other := e.id + "-b"
	next := watch(t, other+".#")
	data, _ := structpb.NewValue(map[string]any{"n": 1})
	if _, err := e.msgs.SendMessage(ctx, &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "shared-1", Source: e.id, Type: "order.created", Data: data}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.msgs.SendMessage(ctx, &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "shared-1", Source: other, Type: "order.created", Data: data}}); err != nil {
		t.Fatal(err)
	}
	d, ok := next(5 * time.Second)
	if !ok {
		t.Fatal("the second source's message was answered with success and never published")
	}
	if d.MessageId != "shared-1" || d.Headers[cloudevent.HeaderTenant] != e.acme.name {
		t.Fatalf("published %q with headers %v", d.MessageId, d.Headers)
	}
}

// SendMessage may not pass itself off as another tenant's webhook source,
// a provider or Hookyard.
func TestSendMessageRefusesForgedSources(t *testing.T) {
	e := start(t)
	theirs := e.id + "-shop"
	rec, _ := json.Marshal(map[string]any{"tenant": e.globex.name, "source": map[string]any{"name": theirs, "provider": "shopify"}})
	if err := e.rdb.Set(context.Background(), publish.SourceKey(e.prefix, theirs), rec, 0).Err(); err != nil {
		t.Fatal(err)
	}
	data, _ := structpb.NewValue(map[string]any{"n": 1})
	for _, src := range []string{theirs, "stripe", "hookyard"} {
		_, err := e.msgs.SendMessage(as(e.acme.key), &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "f-" + src, Source: src, Type: "order.created", Data: data}})
		wantCode(t, "acme sending as "+src, err, codes.PermissionDenied)
	}
	// The owner may.
	if _, err := e.msgs.SendMessage(as(e.globex.key), &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "own-1", Source: theirs, Type: "order.created", Data: data}}); err != nil {
		t.Fatalf("owner: %v", err)
	}
}

// SendMessage follows the shared id rules.
func TestSendMessageIDRules(t *testing.T) {
	e := start(t)
	data, _ := structpb.NewValue(map[string]any{"n": 1})
	for _, id := range []string{"a/b", "a b", "a\r\nb", strings.Repeat("i", publish.MaxIDLen+1)} {
		_, err := e.msgs.SendMessage(as(e.acme.key), &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: id, Source: e.id, Type: "order.created", Data: data}})
		wantCode(t, "id "+id[:min(len(id), 10)], err, codes.InvalidArgument)
	}
	if _, err := e.msgs.SendMessage(as(e.acme.key), &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: strings.Repeat("i", publish.MaxIDLen), Source: e.id, Type: "order.created", Data: data}}); err != nil {
		t.Fatalf("longest id: %v", err)
	}
}

// A source and type too long together for a routing key are the caller's
// error, and the broker connection the API shares keeps working.
func TestSendMessageOverlongRoutingKey(t *testing.T) {
	e := start(t)
	data, _ := structpb.NewValue(map[string]any{"n": 1})
	src := (e.id + strings.Repeat("s", publish.MaxSourceLen))[:publish.MaxSourceLen]
	_, err := e.msgs.SendMessage(as(e.acme.key), &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "long-1", Source: src, Type: strings.Repeat("t", publish.MaxTypeLen), Data: data}})
	wantCode(t, "overlong routing key", err, codes.InvalidArgument)
	next := watch(t, e.id+".#")
	if _, err := e.msgs.SendMessage(as(e.acme.key), &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "after-long", Source: e.id, Type: "order.created", Data: data}}); err != nil {
		t.Fatalf("send after the refused one: %v", err)
	}
	if _, ok := next(5 * time.Second); !ok {
		t.Fatal("the next message was not published")
	}
}
