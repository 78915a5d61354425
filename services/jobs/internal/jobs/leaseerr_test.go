package jobs_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// A note whose lease fails every time (here the task's key holds a value
// of the wrong type, so the lease script errors) is dead-lettered after
// a few deliveries (bus.LeaseTries) instead of being requeued without end.
func TestNoteWithPersistentLeaseErrorIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	r := e.Replicas[0]
	ctx, cancel := context.WithCancel(e.Acme.Ctx(context.Background()))
	defer cancel()
	task, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "x", Queue: "broken"}})
	if err != nil {
		t.Fatal(err)
	}
	key := "{" + e.Config.KeyPrefix + "}:t:" + e.Acme.Name + ":" + task.Id
	if err := e.Redis.Set(context.Background(), key, "not a hash", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	stream, err := r.Workers.Lease(ctx, &jobsv1.LeaseRequest{Queues: []string{"broken"}, Slots: 1, WorkerId: "w"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	conn, err := amqp.Dial(rabbittest.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dlq := rabbit.DLQName(r.Jobs.Bus.TaskQueue(e.Acme.Name, "broken"))
	jobstest.WaitFor(t, 90*time.Second, "the note to be dead-lettered", func() bool {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		q, err := ch.QueueDeclarePassive(dlq, true, false, false, false, nil)
		return err == nil && q.Messages == 1
	})
	d, ok, err := func() (amqp.Delivery, bool, error) {
		ch, err := conn.Channel()
		if err != nil {
			return amqp.Delivery{}, false, err
		}
		defer ch.Close()
		return ch.Get(dlq, true)
	}()
	if err != nil || !ok {
		t.Fatalf("get dead letter: %v %v", ok, err)
	}
	if reason, _ := d.Headers["x-first-death-reason"].(string); reason != "rejected" {
		t.Errorf("dead-lettered as %q, want rejected (by the leaser)", reason)
	}
}
