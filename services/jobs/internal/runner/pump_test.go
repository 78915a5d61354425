package runner

import (
	"context"
	"log/slog"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/platform/testwait"
	"github.com/hookyard/hookyard/services/jobs/internal/bus"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// A publish the broker refuses (here: the task's queue exists with other
// arguments, as when several replicas declare a new quorum queue at once
// and the first publishes are refused) makes the entry due again soon,
// not after the claim's rearm, which is meant for a replica that died.
func TestPumpUnclaimsAFailedPublish(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := redistest.New(t, "jobs-pump")
	st := store.New(rdb, store.Config{Prefix: prefix})
	cctx, cancel := context.WithCancel(ctx)
	conn := rabbit.DialConfig(cctx, rabbittest.URL(), rabbit.Config{})
	pub := rabbit.NewPublisher(conn, rabbit.PublisherConfig{})
	t.Cleanup(func() { pub.Close(); cancel(); conn.Close() })
	testwait.Eventually(t, 15*time.Second, "broker connection", func() bool { return conn.Check(ctx) == nil })
	b := bus.New(conn, pub, rabbittest.UniqueName(t, "jobs"))
	queue := b.TaskQueue("acme", "q")

	// A classic queue of the same name: declaring the quorum queue fails.
	raw, err := amqp.Dial(rabbittest.URL())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := raw.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ch, err := raw.Channel(); err == nil {
			_, _ = ch.QueueDelete(queue, false, false, false)
			_, _ = ch.QueueDelete(rabbit.DLQName(queue), false, false, false)
			ch.Close()
		}
		// Closed here, not deferred: a deferred close runs before the
		// cleanup and left both queues on the broker.
		raw.Close()
	})

	if _, err := st.Enqueue(ctx, "acme", "t1", store.Spec{Name: "noop", Queue: "q", HardLimit: time.Minute}); err != nil {
		t.Fatal(err)
	}
	p := &Pump{Store: st, Bus: b, Log: slog.New(slog.DiscardHandler), Rearm: time.Hour, Retry: time.Millisecond}
	p.init()
	before := time.Now()
	if n, err := p.once1(ctx); err != nil || n != 1 {
		t.Fatalf("once1 = %d, %v; want the one entry claimed", n, err)
	}
	score, err := rdb.ZScore(ctx, "{"+prefix+"}:sched", "acme|t1|1").Result()
	if err != nil {
		t.Fatal(err)
	}
	if due := time.UnixMilli(int64(score)); due.After(before.Add(time.Minute)) {
		t.Fatalf("after a failed publish the entry is due at %s, %s from now: left to the claim's rearm", due.Format(time.RFC3339), time.Until(due).Round(time.Second))
	}

	// Once the broker takes the note, the next pass publishes it.
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 15*time.Second, "the note to be published", func() bool {
		if _, err := p.once1(ctx); err != nil {
			t.Fatal(err)
		}
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
		return err == nil && q.Messages == 1
	})
}
