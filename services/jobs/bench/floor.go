package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
)

// The floor is the least any design with the mandated transports must do
// per task: one unary gRPC enqueue call to a server that does nothing but
// one confirmed publish (amqp091, persistent, into a quorum queue) and
// answer; one consumer that takes the message, makes one unary gRPC
// completion call to a server that does nothing, and acks. No Redis, no
// interceptors, no lease, no result. Its server runs in the service's
// child process on a bare grpc.Server; the enqueuers and the consumer run
// in the benchmark process, as the jobs worker does.

const (
	floorEnqueue  = "/hookyard.bench.Floor/Enqueue"
	floorComplete = "/hookyard.bench.Floor/Complete"
)

// floorQueue is the floor's quorum queue of run id.
func floorQueue(id string) string { return "bench.jobs." + id + ".floor" }

type floorServer struct {
	mu    sync.Mutex
	ch    *amqp.Channel
	queue string
}

// floorDesc serves the floor's two methods with the jobs messages, so the
// bytes on the wire are those of CreateTask and CompleteTask.
var floorDesc = grpc.ServiceDesc{
	ServiceName: "hookyard.bench.Floor",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Enqueue", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			req := &jobsv1.CreateTaskRequest{}
			if err := dec(req); err != nil {
				return nil, err
			}
			return srv.(*floorServer).enqueue(ctx, req)
		}},
		{MethodName: "Complete", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			req := &jobsv1.CompleteTaskRequest{}
			if err := dec(req); err != nil {
				return nil, err
			}
			return &jobsv1.CompleteTaskResponse{}, nil
		}},
	},
}

func (f *floorServer) enqueue(ctx context.Context, req *jobsv1.CreateTaskRequest) (*jobsv1.Task, error) {
	id := req.GetTask().GetId()
	dc, err := f.ch.PublishWithDeferredConfirmWithContext(ctx, "", f.queue, false, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: id, Body: []byte(id)})
	if err != nil {
		return nil, err
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		return nil, fmt.Errorf("publish not confirmed: %v", err)
	}
	return &jobsv1.Task{Id: id}, nil
}

// serveFloor declares the floor's queue and serves the floor on a bare
// gRPC server until ctx ends; it returns the address.
func serveFloor(ctx context.Context, amqpURL, id string) (string, error) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return "", err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return "", err
	}
	q := floorQueue(id)
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		conn.Close()
		return "", err
	}
	if err := ch.Confirm(false); err != nil {
		conn.Close()
		return "", err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		conn.Close()
		return "", err
	}
	gs := grpc.NewServer()
	gs.RegisterService(&floorDesc, &floorServer{ch: ch, queue: q})
	go func() { _ = gs.Serve(lis) }()
	go func() {
		<-ctx.Done()
		gs.Stop()
		conn.Close()
	}()
	return lis.Addr().String(), nil
}

// floorRun runs n tasks through the floor: enqueuers call Enqueue; one
// consumer with a prefetch of the concurrency takes each message, calls
// Complete and acks.
func (b *bench) floorRun(n, enqueuers int) (result, error) {
	conn, err := amqp.Dial(b.amqpURL)
	if err != nil {
		return result{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return result{}, err
	}
	if err := ch.Qos(b.conc, 0, false); err != nil {
		return result{}, err
	}
	dl, err := ch.Consume(floorQueue(b.id), "floor", false, false, false, false, nil)
	if err != nil {
		return result{}, err
	}
	r := newRecorder(n)
	warmID := fmt.Sprintf("%s-floor-warm-%d", b.id, time.Now().UnixNano())
	warm := make(chan struct{})
	var wg sync.WaitGroup
	consumed := make(chan struct{})
	defer func() {
		_ = ch.Cancel("floor", false)
		<-consumed
		wg.Wait()
	}()
	go func() {
		defer close(consumed)
		for d := range dl {
			wg.Go(func() {
				id := string(d.Body)
				if id == warmID {
					close(warm)
				}
				r.started(id)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := b.floorCC.Invoke(ctx, floorComplete, &jobsv1.CompleteTaskRequest{TaskId: id, LeaseToken: 1}, &jobsv1.CompleteTaskResponse{}); err != nil {
					_ = d.Nack(false, true)
					return
				}
				_ = d.Ack(false)
			})
		}
	}()
	enqueue := func(id string) error {
		return b.floorCC.Invoke(context.Background(), floorEnqueue, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: id, Name: "noop", Queue: queue}}, &jobsv1.Task{})
	}
	if err := enqueue(warmID); err != nil {
		return result{}, err
	}
	select {
	case <-warm:
	case <-time.After(30 * time.Second):
		return result{}, fmt.Errorf("the first floor task did not arrive")
	}
	return b.drive(r, n, enqueuers, 0, enqueue)
}
