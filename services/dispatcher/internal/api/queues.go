package api

import (
	"context"
	"errors"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/durationpb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/delay"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
)

// Queues implements QueueService.
//
// API keys are tenant keys: there is no operator key. The dispatcher's
// queues are shared by all tenants, so every caller sees the same
// aggregate depths, and nothing in them names a tenant or a message.
type Queues struct {
	dispatcherv1.UnimplementedQueueServiceServer
	Rabbit *rabbit.Conn
	Names  task.Queues
}

// Kinds of queue.
const (
	kindEvents     = "events"
	kindDeliveries = "deliveries"
	kindDelay      = "delay"
	kindDeadLetter = "dead_letter"
)

// layout lists the dispatcher's queues in the order messages pass
// through them.
func (s *Queues) layout() []*dispatcherv1.DispatcherQueue {
	q := s.Names
	out := []*dispatcherv1.DispatcherQueue{
		{Name: q.Events, Kind: kindEvents},
		{Name: q.Deliveries, Kind: kindDeliveries},
	}
	l := q.Delays()
	rungs := l.Rungs
	if len(rungs) == 0 {
		rungs = delay.DefaultRungs
	}
	for _, r := range rungs {
		out = append(out, &dispatcherv1.DispatcherQueue{Name: l.Queue(r), Kind: kindDelay, Delay: durationpb.New(r)})
	}
	return append(out,
		&dispatcherv1.DispatcherQueue{Name: rabbit.DLQName(q.Events), Kind: kindDeadLetter},
		&dispatcherv1.DispatcherQueue{Name: rabbit.DLQName(q.Deliveries), Kind: kindDeadLetter})
}

// ListQueues reads each queue's depth with a passive declare: AMQP tells
// ready messages and consumers, not unacknowledged ones.
func (s *Queues) ListQueues(ctx context.Context, _ *dispatcherv1.ListQueuesRequest) (*dispatcherv1.ListQueuesResponse, error) {
	if _, err := auth.MustTenant(ctx); err != nil {
		return nil, err
	}
	out := s.layout()
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	for _, q := range out {
		if ch == nil {
			var err error
			if ch, err = s.Rabbit.Channel(ctx); err != nil {
				return nil, server.Unavailable(domain, "queues", err)
			}
		}
		got, err := ch.QueueDeclarePassive(q.Name, true, false, false, false, nil)
		var aerr *amqp.Error
		switch {
		case errors.As(err, &aerr) && aerr.Code == amqp.NotFound:
			// The broker closes the channel on a failed passive declare.
			q.Missing, ch = true, nil
		case err != nil:
			return nil, server.Unavailable(domain, "queues", err)
		default:
			q.Ready, q.Consumers = int64(got.Messages), int32(got.Consumers)
		}
	}
	return &dispatcherv1.ListQueuesResponse{Queues: out}, nil
}
