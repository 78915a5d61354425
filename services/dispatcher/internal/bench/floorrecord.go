package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisbatch"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
)

// deliveredRecords is the least Redis work that makes a consumer's output
// effectively once (DESIGN.md invariant 2) with any number of replicas:
// one key per delivery, <prefix>:<event>/<endpoint>, written with plain
// SETs in two round trips per event, each shared with the other events
// handled at the same time (redisbatch, as the dispatcher shares its
// admissions and settlements).
//
//  1. Before sending, claim every delivery of the event: SET key token NX
//     PX lease GET. A write-only record would detect nothing, so there
//     must be a read before the send; and it must be an atomic claim, not
//     EXISTS, because two copies of one event (a publish repeated after a
//     lost confirm, a redelivery while the first consumer still runs) can
//     be handled at once by two replicas, and with EXISTS both would find
//     no record and both send. The reply tells the three cases apart:
//     nil, claimed, send; "delivered", skip; another token, another copy
//     is sending it right now.
//  2. After the POSTs and before the ack, overwrite the claims of the
//     deliveries made with "delivered", kept for the dispatcher's message
//     retention, and wait for the write (and for the replicas, as the
//     dispatcher does, when Redis has any).
//
// The claim is not the record: a consumer that dies after claiming and
// before sending would otherwise lose the delivery; its claim expires
// after the lease and the redelivered event sends it. A crash between a
// POST and its record sends that delivery again: that window is in any
// design that records after sending. The dispatcher's delivered marker and
// attempt lock (package admit) are these two keys; it also keeps the
// message, the attempts and the per-endpoint limits, which this does not.
type deliveredRecords struct {
	rdb    redis.UniversalClient
	prefix string
	keep   time.Duration // how long a delivered record is kept
	lease  time.Duration // how long a claim holds; 0: claimLease
	batch  redisbatch.Batcher
}

// recordDelivered is the value of a delivered record; a claim's value is
// its token.
const recordDelivered = "delivered"

// claimState is what a claim says about one delivery.
type claimState int

const (
	claimSend claimState = iota // claimed: send it
	claimDone                   // recorded as delivered: skip it
	claimBusy                   // claimed by another copy of the event
)

// claimLease is how long the claims of an event with n endpoints hold: its
// POSTs are made one after the other, each bounded by the client timeout.
func claimLease(n int) time.Duration { return time.Duration(n)*endpoint.MaxTimeout + 10*time.Second }

func (r *deliveredRecords) key(event string, ep int) string {
	return r.prefix + ":" + event + "/" + strconv.Itoa(ep)
}

// claims is what a recorder's claim found for the deliveries of one event.
type claims struct {
	event  string
	states []claimState
	reqs   []admit.Request // admitRecords only
}

// recorder keeps what makes the floor's deliveries effectively once.
type recorder interface {
	// claim claims the deliveries of event to endpoints 0..n-1.
	claim(ctx context.Context, event string, n int) (*claims, error)
	// record records the deliveries to sent as delivered and returns once
	// Redis has them; claims of the others are given up.
	record(ctx context.Context, c *claims, sent []int) error
}

// claim claims the deliveries of event to endpoints 0..n-1 and says, for
// each, whether to send it.
func (r *deliveredRecords) claim(ctx context.Context, event string, n int) (*claims, error) {
	token := randomHex(8)
	lease := r.lease
	if lease == 0 {
		lease = claimLease(n)
	}
	cmds := make([]*redis.StatusCmd, n)
	err := r.batch.Do(ctx, r.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		for i := range n {
			cmds[i] = pipe.SetArgs(ctx, r.key(event, i), token, redis.SetArgs{Mode: "NX", TTL: lease, Get: true})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("claim deliveries of %s: %w", event, err)
	}
	c := &claims{event: event, states: make([]claimState, n)}
	for i, cmd := range cmds {
		v, err := cmd.Result()
		switch {
		case errors.Is(err, redis.Nil):
			c.states[i] = claimSend
		case err != nil:
			return nil, fmt.Errorf("claim delivery of %s: %w", event, err)
		case v == recordDelivered:
			c.states[i] = claimDone
		default:
			c.states[i] = claimBusy
		}
	}
	return c, nil
}

// record records the deliveries of c to sent as delivered. The claims of
// deliveries not made expire by themselves.
func (r *deliveredRecords) record(ctx context.Context, c *claims, sent []int) error {
	if len(sent) == 0 {
		return nil
	}
	err := r.batch.Do(ctx, r.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		for _, i := range sent {
			pipe.Set(ctx, r.key(c.event, i), recordDelivered, r.keep)
		}
	})
	return replicated(ctx, r.rdb, c.event, err)
}

// replicated waits, after a record's write (err its error), until the
// replicas have it too, as the dispatcher does for its own records.
func replicated(ctx context.Context, rdb redis.UniversalClient, event string, err error) error {
	if err == nil {
		err = redisconn.Replicated(ctx, rdb)
	}
	if err != nil {
		return fmt.Errorf("record deliveries of %s: %w", event, err)
	}
	return nil
}

// admitRecords takes each delivery through the dispatcher's own admission
// (admit.Gate): besides the delivered marker and the attempt lock of
// deliveredRecords, a lease on the endpoint's in-flight slots shared by
// every replica (its max in-flight is maxInFlight; no rate limit, as the
// benchmark's endpoints have none) and the attempt count, each checked
// and taken by one Lua script per delivery. The admissions of an event
// are asked for together and share a round trip, as Gate.Admit batches
// them; the finishes of an event go in one pipeline of a batch shared
// with other events. The floor with it shows what the shared limits cost
// over the bare record.
type admitRecords struct {
	gate        *admit.Gate
	rdb         redis.UniversalClient
	maxInFlight int
	batch       redisbatch.Batcher
}

func (a *admitRecords) claim(ctx context.Context, event string, n int) (*claims, error) {
	c := &claims{event: event, states: make([]claimState, n), reqs: make([]admit.Request, n)}
	verdicts := make([]admit.Verdict, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		c.reqs[i] = admit.Request{
			Endpoint: strconv.Itoa(i), Message: event, Token: randomHex(8),
			Lease: endpoint.MaxTimeout + 5*time.Second, MaxInFlight: a.maxInFlight,
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			verdicts[i], _, errs[i] = a.gate.Admit(ctx, &c.reqs[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		// Admitted ones hold a slot until their lease ends.
		return nil, err
	}
	for i, v := range verdicts {
		switch v {
		case admit.Go:
			c.states[i] = claimSend
		case admit.Done:
			c.states[i] = claimDone
		default: // another copy, or the endpoint is full: later
			c.states[i] = claimBusy
		}
	}
	return c, nil
}

func (a *admitRecords) record(ctx context.Context, c *claims, sent []int) error {
	delivered := make([]bool, len(c.states))
	for _, i := range sent {
		delivered[i] = true
	}
	err := a.batch.Do(ctx, a.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		for i, s := range c.states {
			if s == claimSend {
				a.gate.QueueFinish(ctx, pipe, c.reqs[i], delivered[i])
			}
		}
	})
	return replicated(ctx, a.rdb, c.event, err)
}
