package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/services/jobs/internal/bus"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// MaxSlots caps LeaseRequest.slots.
const MaxSlots = 1000

// Workers serves WorkerService.
type Workers struct {
	jobsv1.UnimplementedWorkerServiceServer
	Deps
}

// Lease streams tasks to a worker. It subscribes to the worker's queues
// while the worker has a free slot (see session) and acknowledges a note
// as soon as the task is leased in Redis: no note waits unacknowledged
// for a busy worker longer than HoldMax, and a leased task belongs to the
// lease (and its reaper), not to this stream.
func (s *Workers) Lease(r *jobsv1.LeaseRequest, stream jobsv1.WorkerService_LeaseServer) error {
	ctx := stream.Context()
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return err
	}
	queues := r.GetQueues()
	if len(queues) == 0 {
		queues = []string{DefaultQueue}
	}
	if len(queues) > 32 {
		return invalid("queues: at most 32")
	}
	physical := map[string]string{} // broker queue → queue
	for _, q := range queues {
		if err := ValidQueue(q); err != nil {
			return err
		}
		physical[s.Bus.TaskQueue(tenant, q)] = q
	}
	slots := int(r.GetSlots())
	switch {
	case slots < 0 || slots > MaxSlots:
		return invalid("slots: %d, at most %d", slots, MaxSlots)
	case slots == 0:
		slots = 1
	}
	worker := r.GetWorkerId()
	if len(worker) > 128 {
		return invalid("workerId: at most 128 bytes")
	}
	if worker == "" {
		worker = "worker"
	}
	l := &leaser{Workers: s, tenant: tenant, worker: worker, stream: stream, free: slots, freed: make(chan struct{}, 1), held: map[string]int64{}}
	go l.watch(ctx)
	for {
		if !l.waitFree(ctx) {
			return nil
		}
		err := l.session(ctx, physical)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var st interface{ GRPCStatus() *status.Status }
			if errors.As(err, &st) {
				return err
			}
			s.Log.WarnContext(ctx, "lease session", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
}

type leaser struct {
	*Workers
	tenant, worker string
	stream         jobsv1.WorkerService_LeaseServer
	sendMu         sync.Mutex // a stream takes one Send at a time

	mu    sync.Mutex
	free  int
	held  map[string]int64 // task id → lease token
	freed chan struct{}
}

func (l *leaser) waitFree(ctx context.Context) bool {
	for {
		l.mu.Lock()
		f := l.free
		l.mu.Unlock()
		if f > 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-l.freed:
		}
	}
}

func (l *leaser) release(id string, token int64) {
	l.mu.Lock()
	if l.held[id] != token {
		l.mu.Unlock()
		return
	}
	delete(l.held, id)
	l.free++
	l.mu.Unlock()
	select {
	case l.freed <- struct{}{}:
	default:
	}
}

// watch frees the slots of attempts that ended elsewhere (on another
// replica, through the reaper there).
func (l *leaser) watch(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.mu.Lock()
		held := make(map[string]int64, len(l.held))
		for k, v := range l.held {
			held[k] = v
		}
		l.mu.Unlock()
		for id, token := range held {
			if !l.Store.Holds(ctx, l.tenant, id, token) {
				l.release(id, token)
			}
		}
	}
}

// reserve takes a free slot for a note about to be leased and says how
// many are left.
func (l *leaser) reserve() (ok bool, left int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.free == 0 {
		return false, 0
	}
	l.free--
	return true, l.free
}

func (l *leaser) slotsFree() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.free
}

// unreserve gives back a slot whose note did not become a lease.
func (l *leaser) unreserve() {
	l.mu.Lock()
	l.free++
	l.mu.Unlock()
	select {
	case l.freed <- struct{}{}:
	default:
	}
}

type note struct {
	amqp.Delivery
	queue string
	at    time.Time // when it arrived
}

// HoldMax is how long a note may wait in a full worker for a slot before
// the stream unsubscribes and hands the notes it holds back to the queue,
// for workers that have room.
const HoldMax = 100 * time.Millisecond

// session subscribes to the queues, one consumer per queue on one
// channel, with a prefetch of the free slots at the start. Notes are
// acknowledged once leased, so the prefetch bounds the notes held here
// waiting for a slot, not the tasks running: while slots free up as fast
// as notes arrive, one subscription keeps flowing. Each note is leased
// into a slot reserved for it, concurrently, so a worker with many free
// slots fills them in one round trip's time. When a note has waited
// HoldMax without a slot (the worker is busy with longer tasks), the
// session ends and closing its channel returns the held notes; the
// stream subscribes again once a slot is free. It also ends, with nothing
// held, once twice as many slots are free as it began with, to subscribe
// again with the wider prefetch.
func (l *leaser) session(ctx context.Context, queues map[string]string) error {
	for q := range queues {
		if err := l.Bus.Ensure(ctx, q); err != nil {
			return fmt.Errorf("declare %s: %w", q, err)
		}
	}
	l.mu.Lock()
	prefetch := l.free
	l.mu.Unlock()
	if prefetch == 0 {
		return nil
	}
	ch, err := l.Bus.Conn().Channel(ctx)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	var wg, takes sync.WaitGroup
	defer func() {
		takes.Wait() // their acks need the channel
		close(stop)
		_ = ch.Close()
		wg.Wait()
	}()
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return err
	}
	merged := make(chan note)
	for q, name := range queues {
		dl, err := ch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("consume %s: %w", q, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range dl {
				select {
				case merged <- note{Delivery: d, queue: name}:
				case <-stop:
					return
				}
			}
		}()
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	failed := make(chan error, 1)
	var held []note // oldest first
	hold := time.NewTimer(HoldMax)
	defer hold.Stop()
	for {
		for len(held) > 0 {
			if ok, _ := l.reserve(); !ok {
				break
			}
			n := held[0]
			held[0] = note{}
			held = held[1:]
			takes.Add(1)
			go func() {
				defer takes.Done()
				if err := l.take(ctx, n); err != nil {
					select {
					case failed <- err:
					default:
					}
				}
			}()
		}
		var full <-chan time.Time
		if len(held) > 0 {
			hold.Reset(HoldMax - time.Since(held[0].at))
			full = hold.C
		} else if l.slotsFree() >= 2*prefetch {
			// Begun with few free slots, the subscription would stay
			// that narrow: subscribe again with a prefetch of what is
			// free now.
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case e := <-closed:
			return fmt.Errorf("channel closed: %v", e)
		case err := <-failed:
			return err
		case n := <-merged:
			n.at = time.Now()
			held = append(held, n)
		case <-l.freed:
		case <-full:
			return nil // closing the channel returns the held notes
		}
	}
}

// take leases the task of n into a slot reserved for it, or gives the
// slot back.
func (l *leaser) take(ctx context.Context, n note) error {
	leased := false
	defer func() {
		if !leased {
			l.unreserve()
		}
	}()
	d := n.Delivery
	r, err := store.ParseReady(string(d.Body))
	if err != nil || r.Tenant != l.tenant {
		_ = d.Ack(false)
		return nil
	}
	ttl := 2 * l.HeartbeatInterval
	lease, ok, err := l.Store.LeaseIn(ctx, r, n.queue, l.worker, ttl)
	if err != nil {
		if !bus.Requeue(d) {
			l.Log.ErrorContext(ctx, "note dead-lettered after repeated lease errors; the task's schedule entry publishes it again later",
				"task_id", r.ID, "tries", bus.LeaseTries, "err", err)
		}
		return err
	}
	if err := d.Ack(false); err != nil {
		// The note returns to the queue, and a second lease of this
		// generation is refused; the lease taken here stands.
		l.Log.WarnContext(ctx, "ack note", "task_id", r.ID, "err", err)
	}
	if !ok {
		return nil
	}
	leased = true
	l.mu.Lock()
	l.held[lease.ID] = lease.Token
	l.mu.Unlock()
	ended, unwatch := l.Hub.Watch(lease.Tenant, lease.ID)
	go func() {
		defer unwatch()
		select {
		case <-ended:
			l.release(lease.ID, lease.Token)
		case <-ctx.Done():
		}
	}()
	task := specProto(lease.ID, lease.Spec)
	task.State, task.Attempts = store.Running, int32(lease.Attempt)
	l.sendMu.Lock()
	err = l.stream.Send(&jobsv1.LeaseResponse{
		Task: task, LeaseToken: lease.Token, LeaseExpireTime: ts(lease.Expires),
		HeartbeatInterval: durationpb.New(l.HeartbeatInterval), HardDeadline: ts(lease.Hard), Attempt: int32(lease.Attempt),
		Traceparent: lease.Spec.Trace,
	})
	l.sendMu.Unlock()
	if err != nil {
		// The worker is gone before it saw the task: hand it back unspent.
		if _, e := l.Store.End(context.WithoutCancel(ctx), lease.Tenant, lease.ID, lease.Token,
			store.Outcome{Err: "worker disconnected before it received the task", RetryAfter: time.Millisecond}); e == nil {
			l.Pump.Wake()
		}
		return err
	}
	return nil
}

func (s *Workers) lease(ctx context.Context, id string, token int64) (string, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return "", err
	}
	return tenant, checkLease(id, token)
}

func checkLease(id string, token int64) error {
	if !idRe.MatchString(id) {
		return status.Error(codes.NotFound, "task not found")
	}
	if token <= 0 {
		return invalid("leaseToken: required")
	}
	return nil
}

// Heartbeat extends a lease.
func (s *Workers) Heartbeat(ctx context.Context, r *jobsv1.HeartbeatRequest) (*jobsv1.HeartbeatResponse, error) {
	tenant, err := s.lease(ctx, r.GetTaskId(), r.GetLeaseToken())
	if err != nil {
		return nil, err
	}
	exp, cancel, err := s.Store.Heartbeat(ctx, tenant, r.GetTaskId(), r.GetLeaseToken(), 2*s.HeartbeatInterval)
	if err != nil {
		return nil, grpcErr(err)
	}
	return &jobsv1.HeartbeatResponse{LeaseExpireTime: ts(exp), CancelRequested: cancel}, nil
}

// CompleteTask records a success.
func (s *Workers) CompleteTask(ctx context.Context, r *jobsv1.CompleteTaskRequest) (*jobsv1.CompleteTaskResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	it, err := s.success(tenant, r)
	if err != nil {
		return nil, err
	}
	st, err := s.Store.End(ctx, tenant, it.ID, it.Token, it.Outcome)
	if err != nil {
		return nil, grpcErr(err)
	}
	s.ended(tenant, it.ID, st)
	return &jobsv1.CompleteTaskResponse{}, nil
}

// MaxCompletions caps the items of one CompleteTasks call.
const MaxCompletions = 1000

// CompleteTasks records several successes in one Redis round trip, each
// with its own fencing check and its own answer.
func (s *Workers) CompleteTasks(ctx context.Context, r *jobsv1.CompleteTasksRequest) (*jobsv1.CompleteTasksResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	reqs := r.GetRequests()
	if len(reqs) > MaxCompletions {
		return nil, invalid("requests: %d, at most %d", len(reqs), MaxCompletions)
	}
	errs := make([]error, len(reqs))
	items := make([]store.EndItem, 0, len(reqs))
	at := make([]int, 0, len(reqs)) // items[j] answers reqs[at[j]]
	for i, req := range reqs {
		it, err := s.success(tenant, req)
		if err != nil {
			errs[i] = err
			continue
		}
		items = append(items, it)
		at = append(at, i)
	}
	if len(items) > 0 {
		states, ends := s.Store.EndAll(ctx, items)
		for j, it := range items {
			if errs[at[j]] = grpcErr(ends[j]); ends[j] == nil {
				s.ended(tenant, it.ID, states[j])
			}
		}
	}
	out := &jobsv1.CompleteTasksResponse{Statuses: make([]*jobsv1.CompleteTaskStatus, len(reqs))}
	for i, err := range errs {
		st := status.Convert(err)
		out.Statuses[i] = &jobsv1.CompleteTaskStatus{Code: int32(st.Code()), Message: st.Message()}
	}
	return out, nil
}

// success checks a reported success and makes it an item to end.
func (s *Workers) success(tenant string, r *jobsv1.CompleteTaskRequest) (store.EndItem, error) {
	if err := checkLease(r.GetTaskId(), r.GetLeaseToken()); err != nil {
		return store.EndItem{}, err
	}
	raw := []byte("null")
	if r.GetResult() != nil {
		var err error
		if raw, err = protojson.Marshal(r.GetResult()); err != nil {
			return store.EndItem{}, invalid("result: %v", err)
		}
	}
	if len(raw) > MaxResultBytes {
		return store.EndItem{}, invalid("result: %d bytes, over the cap of %d; store large results elsewhere and return a reference", len(raw), MaxResultBytes)
	}
	return store.EndItem{Tenant: tenant, ID: r.GetTaskId(), Token: r.GetLeaseToken(), Outcome: store.Outcome{Result: raw}}, nil
}

// FailTask records a failed attempt.
func (s *Workers) FailTask(ctx context.Context, r *jobsv1.FailTaskRequest) (*jobsv1.FailTaskResponse, error) {
	tenant, err := s.lease(ctx, r.GetTaskId(), r.GetLeaseToken())
	if err != nil {
		return nil, err
	}
	msg := r.GetError()
	if msg == "" {
		msg = "failed"
	}
	if len(msg) > MaxErrorBytes {
		msg = msg[:MaxErrorBytes]
	}
	after, err := duration("retryAfter", r.GetRetryAfter())
	if err != nil {
		return nil, err
	}
	if after < 0 || after > 7*24*time.Hour {
		return nil, invalid("retryAfter: %s is outside 0s..168h", after)
	}
	st, err := s.Store.End(ctx, tenant, r.GetTaskId(), r.GetLeaseToken(), store.Outcome{Err: msg, NoRetry: r.GetNoRetry(), RetryAfter: after})
	if err != nil {
		return nil, grpcErr(err)
	}
	s.ended(tenant, r.GetTaskId(), st)
	return &jobsv1.FailTaskResponse{State: st}, nil
}

func (s *Workers) ended(tenant, id, state string) {
	s.Hub.Ended(tenant, id)
	if state == store.Pending {
		s.Pump.Wake()
	}
	if s.Ended != nil {
		s.Ended(tenant, id, state)
	}
}
