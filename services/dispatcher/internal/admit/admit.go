// Package admit decides, for every delivery attempt, whether it may start
// now. The decision is shared by all dispatcher replicas through Redis and
// made in one round trip by a Lua script that checks, in order:
//
//  1. the delivered marker of (endpoint, message): effectively-once output;
//  2. the attempt lock of (endpoint, message): two copies of one task (a
//     fan-out replayed after a crash) never attempt at the same time;
//  3. the endpoint's in-flight leases against its max in-flight;
//  4. the endpoint's token bucket (rate limit), reserving the next token
//     for an attempt that has to wait.
//
// Leases and locks expire on their own, so a replica killed mid-attempt
// frees its slots after the lease time instead of wedging the endpoint.
// Every key of one endpoint carries the endpoint id as a hash tag, so the
// script stays on one slot in Redis Cluster.
package admit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisbatch"
)

// Verdict is the result of Admit.
type Verdict int

// Verdicts.
const (
	// Go: the attempt may start; call Finish afterwards.
	Go Verdict = iota
	// Done: the message was already delivered to the endpoint.
	Done
	// Busy: another copy of the task is being attempted right now.
	Busy
	// Full: the endpoint is at its max in-flight.
	Full
	// Limited: the endpoint's rate limit has no token; wait Wait.
	Limited
	// Stale: more attempts were made already than this task has seen;
	// it is a second copy of the task (a fan-out replayed after a crash)
	// and must not start a retry chain of its own.
	Stale
)

func (v Verdict) String() string {
	return [...]string{"go", "done", "busy", "full", "limited", "stale"}[v]
}

// Request describes one attempt about to start.
type Request struct {
	Endpoint    string
	Message     string
	Token       string        // unique per attempt; identifies the lease
	Lease       time.Duration // how long the slot is held at most
	MaxInFlight int
	Rate        int // tokens per second; 0 = unlimited
	// Attempts is how many attempts the task has seen made; Finish
	// records one more.
	Attempts int

	keys []string // set by Admit, for the Finish or Cancel that follows
}

// Gate is the shared admission control.
type Gate struct {
	rdb       redis.UniversalClient
	prefix    string
	retention time.Duration
	// LockOutlives: see DefaultLockOutlives.
	LockOutlives time.Duration
	batch        redisbatch.Batcher
	// retentionMs is retention in ms as a script argument, boxed once:
	// an int64 boxed on every call is an allocation.
	retentionMs any
}

// New returns a Gate keeping delivered markers for retention.
func New(rdb redis.UniversalClient, prefix string, retention time.Duration) *Gate {
	return &Gate{rdb: rdb, prefix: prefix, retention: retention, LockOutlives: DefaultLockOutlives, retentionMs: retention.Milliseconds()}
}

// requestKeys returns the keys of r, as Admit built them if it did.
func (g *Gate) requestKeys(r Request) []string {
	if r.keys != nil {
		return r.keys
	}
	return g.keys(r.Endpoint, r.Message)
}

// keyKinds name the keys of keys, in order; true: the key has the message.
var keyKinds = [...]struct {
	kind string
	msg  bool
}{{"done", true}, {"lock", true}, {"inflight", false}, {"bucket", false}, {"resv", true}, {"n", true}}

// keys returns the keys of an attempt: the delivered marker, the attempt
// lock, the in-flight set, the rate-limit bucket, the reservation and the
// attempt count. They are cut from one string (two allocations, not seven:
// every attempt builds them twice).
func (g *Gate) keys(ep, msg string) []string {
	size := 0
	for _, k := range keyKinds {
		size += len(g.prefix) + len(k.kind) + len(ep) + 4
		if k.msg {
			size += len(msg) + 1
		}
	}
	var b strings.Builder
	b.Grow(size)
	ends := [len(keyKinds)]int{}
	for i, k := range keyKinds {
		b.WriteString(g.prefix)
		b.WriteByte(':')
		b.WriteString(k.kind)
		b.WriteString(":{")
		b.WriteString(ep)
		b.WriteByte('}')
		if k.msg {
			b.WriteByte(':')
			b.WriteString(msg)
		}
		ends[i] = b.Len()
	}
	all := b.String()
	keys := make([]string, len(keyKinds))
	start := 0
	for i, end := range ends {
		keys[i], start = all[start:end], end
	}
	return keys
}

// admitScript returns {verdict, wait_ms}.
//
// A rate-limited attempt reserves the next free token instead of only
// being told to come back: the bucket goes into debt and the reservation
// (KEYS[5], the time it is due) lets the task in when it returns. A backlog
// for a limited endpoint therefore costs one trip through the delay queues
// per task, not one per task per retry interval. Reservations reach at most
// ARGV[6] ms ahead; a task beyond that waits that long and asks again.
var admitScript = redisbatch.NewScript(`
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local token = ARGV[3]
local maxinflight = tonumber(ARGV[4])
local rate = tonumber(ARGV[5])
local horizon = tonumber(ARGV[6])
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {2, 0} end
local made = tonumber(redis.call('GET', KEYS[6]))
if made and made > tonumber(ARGV[7]) then return {5, 0} end
local due = tonumber(redis.call('GET', KEYS[5]))
if due and due - now > 20 then return {4, due - now} end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) >= maxinflight then return {3, 0} end
if rate > 0 and not due then
  local burst = rate
  local b = redis.call('HMGET', KEYS[4], 't', 'at')
  local tokens = tonumber(b[1]) or burst
  local at = tonumber(b[2]) or now
  if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
  if tokens < 1 then
    local wait = math.ceil((1 - tokens) * 1000 / rate)
    if wait > horizon then return {4, horizon} end
    tokens = tokens - 1
    redis.call('HSET', KEYS[4], 't', tostring(tokens), 'at', now)
    redis.call('PEXPIRE', KEYS[4], math.ceil((burst - tokens) * 1000 / rate) + 1000)
    redis.call('SET', KEYS[5], now + wait, 'PX', wait + horizon)
    return {4, wait}
  end
  redis.call('HSET', KEYS[4], 't', tostring(tokens - 1), 'at', now)
  redis.call('PEXPIRE', KEYS[4], math.ceil((burst - tokens + 1) * 1000 / rate) + 1000)
end
if due then redis.call('DEL', KEYS[5]) end
redis.call('SET', KEYS[2], token, 'PX', lease + tonumber(ARGV[8]))
redis.call('ZADD', KEYS[3], now + lease, token)
-- Only ever extend the set's TTL: leases differ per attempt (they follow
-- the endpoint's timeout), and a short lease must not let the whole set
-- expire under a longer one still running, which would free its slot early.
if redis.call('PTTL', KEYS[3]) < lease + 1000 then
  redis.call('PEXPIRE', KEYS[3], lease + 1000)
end
return {0, 0}
`)

// finishScript releases the lease and lock of an attempt and, if it
// delivered, sets the delivered marker; otherwise it records the attempts
// made (ARGV[6], unless empty). A delivered message keeps no count: the
// marker, checked first, refuses every later copy on its own, so the
// count would only hold a key per delivery for the retention period; the
// count earlier failures left (ARGV[6] > 1) goes. With ARGV[4] = '1' the
// attempt never started (its breaker refused it): its token goes back to
// the bucket of rate ARGV[5].
var finishScript = redisbatch.NewScript(`
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
  if ARGV[6] ~= '' and tonumber(ARGV[6]) > 1 then redis.call('DEL', KEYS[6]) end
elseif ARGV[6] ~= '' then
  redis.call('SET', KEYS[6], ARGV[6], 'PX', ARGV[3])
end
local rate = tonumber(ARGV[5])
if ARGV[4] == '1' and rate > 0 and redis.call('EXISTS', KEYS[4]) == 1 then
  local t = tonumber(redis.call('HGET', KEYS[4], 't')) or rate
  redis.call('HSET', KEYS[4], 't', tostring(math.min(rate, t + 1)))
end
return 0
`)

// DefaultLockOutlives is how much longer than its lease an attempt's lock
// is kept if the attempt never finishes (Finish releases it): an attempt
// whose write failed after a success keeps retrying that write for a
// while (deliver.Worker), and another copy of its task must not deliver
// again before the success is written down. The in-flight slot is not
// kept longer: only that one delivery waits.
const DefaultLockOutlives = 40 * time.Second

// MaxReservation is how far ahead a rate-limited attempt may reserve its
// token.
const MaxReservation = 15 * time.Minute

// maxReservationMs is MaxReservation as a script argument, boxed once.
var maxReservationMs any = MaxReservation.Milliseconds()

// Admit asks whether an attempt may start now. With Limited, wait says
// when to come back: the token is reserved for that time when it is
// within MaxReservation.
func (g *Gate) Admit(ctx context.Context, r *Request) (v Verdict, wait time.Duration, err error) {
	now := time.Now().UnixMilli()
	maxInFlight := max(r.MaxInFlight, 1)
	r.keys = g.keys(r.Endpoint, r.Message)
	keys := r.keys
	args := []any{now, max(r.Lease.Milliseconds(), 1), r.Token, maxInFlight, r.Rate, maxReservationMs, r.Attempts,
		g.LockOutlives.Milliseconds()}
	// Admissions asked for together share a round trip.
	var cmd *redis.Cmd
	err = g.batch.Do(ctx, g.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		cmd = admitScript.EvalSha(ctx, pipe, keys, args...)
	})
	var res []int64
	if err == nil {
		res, err = cmd.Int64Slice()
	}
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("admit attempt: %w", err)
	}
	return Verdict(res[0]), time.Duration(res[1]) * time.Millisecond, nil
}

// Finish ends an admitted attempt; delivered sets the delivered marker.
func (g *Gate) Finish(ctx context.Context, r Request, delivered bool) error {
	err := g.batch.Do(ctx, g.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		g.QueueFinish(ctx, pipe, r, delivered)
	})
	if err != nil {
		return fmt.Errorf("finish attempt: %w", err)
	}
	return nil
}

// QueueFinish adds Finish to pipe, so that the worker sends it together
// with the rest of an attempt's bookkeeping in one round trip. It sends
// the script by digest: pipe must be sent by a redisbatch.Batcher, which
// sends it again in full if Redis has lost it.
func (g *Gate) QueueFinish(ctx context.Context, pipe redis.Pipeliner, r Request, delivered bool) {
	d := "0"
	if delivered {
		d = "1"
	}
	finishScript.EvalSha(ctx, pipe, g.requestKeys(r), r.Token, d, g.retentionMs, "0", r.Rate, r.Attempts+1)
}

// Cancel ends an admitted attempt that did not start (its circuit breaker
// refused it) and gives its rate-limit token back, so that refusals do not
// use up the endpoint's rate.
func (g *Gate) Cancel(ctx context.Context, r Request) error {
	if err := finishScript.Run(ctx, g.rdb, g.requestKeys(r), r.Token, "0", g.retention.Milliseconds(), "1", r.Rate, "").Err(); err != nil {
		return fmt.Errorf("cancel attempt: %w", err)
	}
	return nil
}

// MarkDelivered sets the delivered marker of a delivery whose success
// could not be written down when it happened.
func (g *Gate) MarkDelivered(ctx context.Context, ep, msg string) error {
	if err := g.rdb.Set(ctx, g.keys(ep, msg)[0], "1", g.retention).Err(); err != nil {
		return fmt.Errorf("set delivered marker: %w", err)
	}
	return nil
}

// Forget removes the delivered marker and the attempt count so that an
// explicit resend is delivered again, counting its attempts afresh.
func (g *Gate) Forget(ctx context.Context, ep, msg string) error {
	k := g.keys(ep, msg)
	if err := g.rdb.Del(ctx, k[0], k[5]).Err(); err != nil {
		return fmt.Errorf("forget delivered marker: %w", err)
	}
	return nil
}

// Delivered reports whether the marker is set.
func (g *Gate) Delivered(ctx context.Context, ep, msg string) (bool, error) {
	n, err := g.rdb.Exists(ctx, g.keys(ep, msg)[0]).Result()
	if err != nil {
		return false, fmt.Errorf("read delivered marker: %w", err)
	}
	return n == 1, nil
}
