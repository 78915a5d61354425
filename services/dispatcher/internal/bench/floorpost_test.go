package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/fanout"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// The POST floor refuses an unknown key and a body that is not JSON, and
// publishes a message as the event the dispatcher's fan-out reads, with
// data as the body, before it answers 202.
func TestPostFloorPublishesTheMessageAsAnEvent(t *testing.T) {
	id := testenv.ID()
	source := "src" + strings.ToLower(id)
	queue := "hookyard.test." + id
	conn := testenv.Rabbit(t, func(ch *amqp.Channel) error {
		return rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: queue, Bindings: []string{source + ".#"}})
	})
	t.Cleanup(func() { testenv.DeleteQueues([]string{queue, rabbit.DLQName(queue)}) })
	pub := rabbit.NewPublisher(conn, rabbit.PublisherConfig{})
	defer pub.Close()
	keys, err := auth.ParseKeys("acme:key-one-1")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&postFloor{keys: keys, pub: pub})
	defer srv.Close()
	post := func(key, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	msg := `{"id":"m1","source":"` + source + `","type":"order.paid","data":{"pad":"xyz"}}`
	if code := post("key-two-2", msg); code != http.StatusUnauthorized {
		t.Fatalf("unknown key: status %d, want 401", code)
	}
	if code := post("key-one-1", `{"id":`); code != http.StatusBadRequest {
		t.Fatalf("broken JSON: status %d, want 400", code)
	}
	if code := post("key-one-1", msg); code != http.StatusAccepted {
		t.Fatalf("message: status %d, want 202", code)
	}

	ch, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	var d amqp.Delivery
	testenv.WaitFor(t, 5*time.Second, "the published event", func() bool {
		var ok bool
		d, ok, err = ch.Get(queue, true)
		return err == nil && ok
	})
	ev, m, err := fanout.Decode(d)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetTenant() != "acme" || m.ID != "m1" || m.Source != source || m.Type != "order.paid" ||
		m.RoutingKey != source+".order.paid" || string(m.Body) != `{"pad":"xyz"}` || d.MessageId != "m1" {
		t.Fatalf("published %+v (tenant %q, message_id %q); want the message of acme as sent", m, ev.GetTenant(), d.MessageId)
	}
}
