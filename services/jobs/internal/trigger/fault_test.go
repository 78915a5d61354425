package trigger_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
	"github.com/hookyard/hookyard/services/jobs/internal/trigger"
)

// An event whose task cannot be enqueued for a while (Redis down) is
// retried without spending the queue's delivery limit: after more failures
// than the limit allows, the task is still enqueued once the fault ends.
func TestOrdinaryFaultsDoNotDeadLetterEvents(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rdb, err := redisconn.Open(jobstest.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("hookyard:test:jobs:trig:%x%04x", time.Now().UnixNano(), rand.N(1<<16))
	name := rabbittest.UniqueName(t, "trig")
	exchange, queue := name+".events", name+".triggers"
	conn := rabbit.DialConfig(ctx, rabbittest.URL(), rabbit.Config{Setup: rabbit.DeclareFunc(func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil)
	})})
	pub := rabbit.NewPublisher(conn, rabbit.PublisherConfig{})
	t.Cleanup(func() {
		pub.Close()
		conn.Close()
		// A connection of its own: the deferred cancel has closed conn
		// by now, and through it these deletes never ran.
		if raw, err := amqp.Dial(rabbittest.URL()); err == nil {
			if ch, err := raw.Channel(); err == nil {
				_, _ = ch.QueueDelete(queue, false, false, false)
				_, _ = ch.QueueDelete(rabbit.DLQName(queue), false, false, false)
				_ = ch.ExchangeDelete(exchange, false, false)
			}
			raw.Close()
		}
		iter := rdb.Scan(context.Background(), 0, "{"+prefix+"}:*", 1000).Iterator()
		for iter.Next(context.Background()) {
			rdb.Del(context.Background(), iter.Val())
		}
		rdb.Close()
	})
	jobstest.WaitFor(t, 20*time.Second, "broker connection", func() bool { return conn.Check(context.Background()) == nil })

	ts := trigger.NewStore(store.New(rdb, store.Config{Prefix: prefix}))
	var calls atomic.Int32
	enqueued := make(chan *jobsv1.Task, 1)
	c := &trigger.Consumer{Store: ts, Conn: conn, Publisher: pub, Queue: queue, Exchange: exchange, RetryDelay: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Enqueue: func(_ context.Context, _ string, task *jobsv1.Task) (*jobsv1.Task, error) {
			if calls.Add(1) <= 3*rabbit.DefaultDeliveryLimit {
				return nil, status.Error(codes.Unavailable, "task store: connection refused")
			}
			enqueued <- task
			return task, nil
		}}
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Declare(ch); err != nil {
		t.Fatal(err)
	}
	ch.Close()
	tr, err := ts.Create(ctx, "acme", &jobsv1.Trigger{EventType: "app.order.*", Task: &jobsv1.Task{Name: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Bind(ctx, tr.EventType, true); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Run(ctx) }()
	msg, err := cloudevent.ToPublishing(&eventv1.Event{Id: "evt_1", Source: "app", Type: "order.paid", Tenant: "acme",
		Time: timestamppb.Now(), DataContentType: "application/json", Data: []byte(`{"id":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, exchange, cloudevent.RoutingKey("app", "order.paid"), msg); err != nil {
		t.Fatal(err)
	}
	select {
	case task := <-enqueued:
		if task.GetId() != trigger.TaskID(tr.Id, "evt_1") {
			t.Fatalf("enqueued %s", task.GetId())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the event was never turned into its task (%d failed tries): dead-lettered by the delivery limit", calls.Load())
	}
}
