package jobs_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/metadata"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// leaseBarrier holds each of the first n lease scripts sent to Redis until
// n of them are requested at once (or a generous timeout passes): sent and
// held here, or waiting in the store for the round trip out to return
// (leases arriving together share the next round trip). It records the
// most seen requested together.
type leaseBarrier struct {
	n int
	// lazy barriers let every lease through until armed.
	lazy  bool
	armed atomic.Bool
	mu    sync.Mutex
	in    int
	most  int
	seen  int
	full  bool         // n were requested together once
	store *store.Store // set once the service runs
}

func (b *leaseBarrier) DialHook(next redis.DialHook) redis.DialHook { return next }

func (b *leaseBarrier) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, c := range cmds {
			if isLease(c) {
				n++
			}
		}
		return b.pass(n, func() error { return next(ctx, cmds) })
	}
}

func (b *leaseBarrier) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		n := 0
		if isLease(cmd) {
			n = 1
		}
		return b.pass(n, func() error { return next(ctx, cmd) })
	}
}

// pass sends a round trip holding n lease scripts.
func (b *leaseBarrier) pass(n int, send func() error) error {
	if n == 0 || (b.lazy && !b.armed.Load()) {
		return send()
	}
	b.mu.Lock()
	gated := b.seen < b.n
	b.seen += n
	b.in += n
	b.mu.Unlock()
	for deadline := time.Now().Add(20 * time.Second); gated && !b.together() && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	err := send()
	b.mu.Lock()
	b.in -= n
	b.mu.Unlock()
	return err
}

// together records the leases requested now and reports whether all n
// have been at some point.
func (b *leaseBarrier) together() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.in
	if b.store != nil {
		t += b.store.LeasesWaiting()
	}
	b.most = max(b.most, t)
	b.full = b.full || t >= b.n
	return b.full
}

func (b *leaseBarrier) setStore(s *store.Store) {
	b.mu.Lock()
	b.store = s
	b.mu.Unlock()
}

// isLease spots the lease script: nine keys, the second the lease set.
func isLease(cmd redis.Cmder) bool {
	a := cmd.Args()
	if len(a) < 5 || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
		return false
	}
	k, _ := a[4].(string)
	return fmt.Sprint(a[2]) == "9" && strings.HasSuffix(k, ":leases")
}

// A worker with n free slots leases n waiting tasks at once, not one
// note and one Redis round trip after another: the lease stream's
// prefetch follows the free slots and notes are leased concurrently.
func TestLeaseStreamFillsFreeSlotsConcurrently(t *testing.T) {
	t.Parallel()
	const n = 4
	b := &leaseBarrier{n: n}
	e := jobstest.Start(t, jobstest.Options{Heartbeat: 5 * time.Second, RedisHook: b})
	r := e.Replicas[0]
	b.setStore(r.Jobs.Store)
	ctx, cancel := context.WithCancel(e.Acme.Ctx(context.Background()))
	defer cancel()
	for i := range n {
		if _, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: fmt.Sprint("c-", i), Name: "x", Queue: "conc"}}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := r.Workers.Lease(ctx, &jobsv1.LeaseRequest{Queues: []string{"conc"}, Slots: n, WorkerId: "w"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < n {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv after %d tasks: %v", len(got), err)
		}
		got[m.GetTask().GetId()] = true
	}
	b.mu.Lock()
	most := b.most
	b.mu.Unlock()
	if most != n {
		t.Fatalf("at most %d of %d leases were requested together, want all", most, n)
	}
}

// taskTrips counts the Redis commands that name a given task id, sent on
// behalf of a gRPC call (so not by the service's own background loops).
type taskTrips struct {
	id   string
	mu   sync.Mutex
	cmds []string
}

func (c *taskTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *taskTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if c.names(ctx, cmd) {
				c.add("pipeline " + cmd.Name())
				break
			}
		}
		return next(ctx, cmds)
	}
}

func (c *taskTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if c.names(ctx, cmd) {
			c.add(cmd.Name())
		}
		return next(ctx, cmd)
	}
}

// names reports whether cmd names the task and is sent for a gRPC call.
func (c *taskTrips) names(ctx context.Context, cmd redis.Cmder) bool {
	if _, ok := metadata.FromIncomingContext(ctx); !ok {
		return false
	}
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.Contains(s, c.id) {
			return true
		}
	}
	return false
}

func (c *taskTrips) add(name string) {
	c.mu.Lock()
	c.cmds = append(c.cmds, name)
	c.mu.Unlock()
}

// Enqueueing a task due now stores it and publishes its note: one Redis
// round trip on the call's path, without reading back the task it just
// wrote or the name and queue it was just given. Its schedule entry is
// pushed ahead afterwards, in a batch off the call's path.
func TestEnqueueRedisRoundTrips(t *testing.T) {
	t.Parallel()
	c := &taskTrips{id: "trips-task-1"}
	e := jobstest.Start(t, jobstest.Options{RedisHook: c})
	r := e.Replicas[0]
	ctx := e.Acme.Ctx(context.Background())
	// A first task declares the queue and loads the scripts.
	if _, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: "trips-warm", Name: "x", Queue: "trips"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: c.id, Name: "x", Queue: "trips"}}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	cmds := c.cmds
	c.mu.Unlock()
	if len(cmds) != 1 {
		t.Fatalf("enqueue sent %d commands naming the task %v, want 1 (store)", len(cmds), cmds)
	}
	sched, member := "{"+e.Config.KeyPrefix+"}:sched", e.Acme.Name+"|"+c.id+"|1"
	jobstest.WaitFor(t, 20*time.Second, "the schedule entry to be pushed ahead", func() bool {
		score, err := e.Redis.ZScore(context.Background(), sched, member).Result()
		return err == nil && time.UnixMilli(int64(score)).After(time.Now().Add(store.FastPathHold))
	})
}

// A full worker's stream keeps its subscription while slots free up, so
// it may hold a note it has no slot for; it hands the note back after
// api.HoldMax, and a worker with room runs the task while the full one is
// still busy.
func TestFullWorkerHandsHeldNotesBack(t *testing.T) {
	t.Parallel()
	// Leases long enough that the busy worker's task never expires
	// (nothing heartbeats it) while the test runs.
	e := jobstest.Start(t, jobstest.Options{Heartbeat: time.Minute})
	r := e.Replicas[0]
	ctx, cancel := context.WithCancel(e.Acme.Ctx(context.Background()))
	defer cancel()
	create := func(id string) {
		if _, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: id, Name: "slow", Queue: "held"}}); err != nil {
			t.Fatal(err)
		}
	}
	busy, err := r.Workers.Lease(ctx, &jobsv1.LeaseRequest{Queues: []string{"held"}, Slots: 1, WorkerId: "busy"})
	if err != nil {
		t.Fatal(err)
	}
	create("held-1")
	m, err := busy.Recv()
	if err != nil || m.GetTask().GetId() != "held-1" {
		t.Fatalf("busy worker: %v, %v", m, err)
	}
	// The busy worker's only slot is taken and it never completes: the
	// next note may reach its subscription, but it must not stay there.
	create("held-2")
	free, err := r.Workers.Lease(ctx, &jobsv1.LeaseRequest{Queues: []string{"held"}, Slots: 1, WorkerId: "free"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *jobsv1.LeaseResponse, 1)
	go func() {
		if m, err := free.Recv(); err == nil {
			got <- m
		}
	}()
	select {
	case m := <-got:
		if m.GetTask().GetId() != "held-2" {
			t.Fatalf("free worker got %s, want held-2", m.GetTask().GetId())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the free worker never got the task the busy one could not run")
	}
}

// A stream that subscribed while its worker had one free slot widens its
// prefetch once more slots are free: otherwise it would take one note per
// acknowledgement's round trip however many slots free up.
func TestLeaseStreamWidensItsPrefetch(t *testing.T) {
	t.Parallel()
	const slots = 4
	b := &leaseBarrier{n: 2, lazy: true}
	e := jobstest.Start(t, jobstest.Options{Heartbeat: time.Minute, RedisHook: b})
	r := e.Replicas[0]
	b.setStore(r.Jobs.Store)
	ctx, cancel := context.WithCancel(e.Acme.Ctx(context.Background()))
	defer cancel()
	create := func(id string) {
		if _, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: id, Name: "x", Queue: "widen"}}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := r.Workers.Lease(ctx, &jobsv1.LeaseRequest{Queues: []string{"widen"}, Slots: slots, WorkerId: "w"})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() *jobsv1.LeaseResponse {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	complete := func(m *jobsv1.LeaseResponse) {
		if _, err := r.Workers.CompleteTask(ctx, &jobsv1.CompleteTaskRequest{TaskId: m.GetTask().GetId(), LeaseToken: m.GetLeaseToken()}); err != nil {
			t.Fatal(err)
		}
	}
	// Fill every slot; one more note waits, then goes back (HoldMax).
	var running []*jobsv1.LeaseResponse
	for i := range slots + 1 {
		create(fmt.Sprint("w-", i))
	}
	for range slots {
		running = append(running, recv())
	}
	ch, err := e.Rabbit.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	queue := e.Config.QueuePrefix + ".t." + e.Acme.Name + ".widen"
	jobstest.WaitFor(t, 20*time.Second, "the held note to go back to the queue", func() bool {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
		return err == nil && q.Messages == 1
	})
	// One slot frees: the stream subscribes again with a prefetch of 1
	// and gets the waiting task.
	complete(running[0])
	running = append(running[1:], recv())
	for _, m := range running {
		complete(m)
	}
	// Every slot is free: new notes must be leased side by side.
	b.armed.Store(true)
	for i := range slots {
		create(fmt.Sprint("w2-", i))
	}
	for range slots {
		recv()
	}
	b.mu.Lock()
	most := b.most
	b.mu.Unlock()
	if most < 2 {
		t.Fatalf("at most %d lease requested at once with %d free slots: the prefetch stayed at 1", most, slots)
	}
}
