package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisbatch"
	"github.com/hookyard/hookyard/platform/redisconn"
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

// claim claims the deliveries of event to endpoints 0..n-1 for lease and
// says, for each, whether to send it.
func (r *deliveredRecords) claim(ctx context.Context, event string, n int, lease time.Duration) ([]claimState, error) {
	token := randomHex(8)
	cmds := make([]*redis.StatusCmd, n)
	err := r.batch.Do(ctx, r.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		for i := range n {
			cmds[i] = pipe.SetArgs(ctx, r.key(event, i), token, redis.SetArgs{Mode: "NX", TTL: lease, Get: true})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("claim deliveries of %s: %w", event, err)
	}
	out := make([]claimState, n)
	for i, c := range cmds {
		v, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
			out[i] = claimSend
		case err != nil:
			return nil, fmt.Errorf("claim delivery of %s: %w", event, err)
		case v == recordDelivered:
			out[i] = claimDone
		default:
			out[i] = claimBusy
		}
	}
	return out, nil
}

// record records the deliveries of event to eps as delivered and returns
// once Redis (and its replicas, if any) has them.
func (r *deliveredRecords) record(ctx context.Context, event string, eps []int) error {
	if len(eps) == 0 {
		return nil
	}
	err := r.batch.Do(ctx, r.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		for _, i := range eps {
			pipe.Set(ctx, r.key(event, i), recordDelivered, r.keep)
		}
	})
	if err == nil {
		err = redisconn.Replicated(ctx, r.rdb)
	}
	if err != nil {
		return fmt.Errorf("record deliveries of %s: %w", event, err)
	}
	return nil
}
