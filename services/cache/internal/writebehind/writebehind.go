// Package writebehind takes writes into the cache at once and carries them
// to the origin later, through a durable RabbitMQ queue.
//
// A write stores its value twice: as the cached entry, and as the key's
// pending write in Redis (a hash with the value and a sequence number). A
// message naming the key then goes to the writes queue. Its consumer takes
// the key's lock (so one writer per key, in order), sends the pending value
// to the origin and removes the pending write only if no newer one replaced
// it meanwhile. Many writes to one key before the origin is reached are
// coalesced: every message but one finds nothing left to do.
//
// Nothing is lost on a crash: the message is acknowledged only after the
// origin accepted the value or a retry was queued; a consumer that dies
// mid-write leaves its message unacknowledged and the broker hands it to
// another. Failed writes are retried with backoff through the delay queues
// of platform/delay, for as long as it takes, and are listed with their
// last error by ListPending.
package writebehind

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/delay"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/cache/internal/entries"
	"github.com/hookyard/hookyard/services/cache/internal/metrics"
	"github.com/hookyard/hookyard/services/cache/internal/namespace"
	"github.com/hookyard/hookyard/services/cache/internal/origin"
)

// DueHeader carries the time (Unix ms) a retried write is due.
const DueHeader = "x-hookyard-due"

// Queue is the write-behind queue.
type Queue struct {
	Name       string
	Ladder     delay.Ladder
	Rdb        redis.UniversalClient
	Entries    *entries.Store
	Namespaces *namespace.Store
	Origin     *origin.Client
	Pub        Publisher
	Metrics    *metrics.Metrics
	Log        *slog.Logger
	// Prefix is the Redis key prefix of the sweeper's own keys.
	Prefix string
	// SweepEvery is how often one replica looks for pending writes whose
	// message was lost; SweepGrace is how long past its due time a pending
	// write must be to count as lost.
	SweepEvery, SweepGrace time.Duration
	// MaxBackoff caps the delay between attempts.
	MaxBackoff time.Duration
	// Concurrency is how many writes one replica sends at once.
	Concurrency int
	// LockTTL is how long a key's write lock lasts unless renewed; zero
	// means the namespace's origin timeout plus 5s.
	LockTTL time.Duration
}

// Publisher publishes with confirms (rabbit.Publisher).
type Publisher interface {
	Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error
}

// New returns the queue called name.
func New(name string) *Queue {
	return &Queue{Name: name, Ladder: delay.New(name), MaxBackoff: 5 * time.Minute, Concurrency: 16, SweepEvery: 30 * time.Second, SweepGrace: 2 * time.Minute}
}

// Declare declares the queue, its DLQ and its delay queues.
func (q *Queue) Declare(ch *amqp.Channel) error {
	if err := rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: q.Name}); err != nil {
		return err
	}
	return q.Ladder.Declare(ch)
}

type message struct {
	Tenant string `json:"tenant"`
	NS     string `json:"ns"`
	ID     string `json:"id"`
	Key    string `json:"key"`
}

func pendingKey(n entries.NS, key string) string { return n.Key("wb", key) }
func lockKey(n entries.NS, key string) string    { return n.Key("wbl", key) }
func backlogKey(n entries.NS) string             { return n.Key("wbq") }
func seqKey(n entries.NS) string                 { return n.Key("wbseq") }

// Write stores value for key in the cache and queues it for the origin.
// It returns once the queue has confirmed the message.
func (q *Queue) Write(ctx context.Context, rec *namespace.Record, key string, v entries.Value) error {
	n := q.Entries.NS(rec.ID)
	// The sweeper looks for writes whose message was never queued here.
	if err := q.Rdb.ZAdd(ctx, q.namespacesKey(), redis.Z{Score: float64(time.Now().UnixMilli()), Member: rec.ID}).Err(); err != nil {
		return fmt.Errorf("record pending write: %w", err)
	}
	// The cache and the pending write change in one step, so concurrent
	// writes cannot leave the cache holding another value than the one
	// the origin is going to get.
	p := entries.Pend{Pending: pendingKey(n, key), Backlog: backlogKey(n), Seq: seqKey(n), Tenant: rec.Tenant, Name: rec.NS.GetName()}
	if _, err := q.Entries.SetPending(ctx, n, key, v, p); err != nil {
		return fmt.Errorf("record pending write: %w", err)
	}
	if err := q.publish(ctx, rec, key, time.Time{}); err != nil {
		return err
	}
	q.Metrics.WriteBehind.WithLabelValues("queued").Inc()
	return nil
}

func (q *Queue) publish(ctx context.Context, rec *namespace.Record, key string, due time.Time) error {
	body, err := json.Marshal(message{Tenant: rec.Tenant, NS: rec.NS.GetName(), ID: rec.ID, Key: key})
	if err != nil {
		return err
	}
	msg := amqp.Publishing{ContentType: "application/json", Body: body, Headers: amqp.Table{}}
	if !due.IsZero() {
		msg.Headers[DueHeader] = due.UnixMilli()
	}
	if err := q.Pub.Publish(ctx, "", q.Ladder.Key(due), msg); err != nil {
		return fmt.Errorf("queue write-behind: %w", err)
	}
	at := due
	if at.IsZero() {
		at = time.Now()
	}
	// Best effort: without it the sweeper queues a harmless duplicate.
	q.Rdb.HSet(ctx, pendingKey(q.Entries.NS(rec.ID), key), "q", at.UnixMilli())
	return nil
}

// Run consumes the queue until ctx ends.
func (q *Queue) Run(ctx context.Context, conn *rabbit.Conn) error {
	return conn.ConsumeWithConfig(ctx, q.Name, rabbit.ConsumeConfig{
		Prefetch: q.Concurrency, Concurrency: q.Concurrency, ShutdownGrace: 20 * time.Second,
	}, q.Handle)
}

// Handle processes one write-behind message.
func (q *Queue) Handle(ctx context.Context, d amqp.Delivery) {
	var m message
	if err := json.Unmarshal(d.Body, &m); err != nil || m.Key == "" || m.ID == "" {
		q.Log.ErrorContext(ctx, "write-behind message is malformed; sent to the DLQ", "err", err)
		_ = d.Reject(false)
		return
	}
	if due, ok := d.Headers[DueHeader].(int64); ok {
		if t := time.UnixMilli(due); time.Until(t) > delay.Tolerance {
			q.settle(ctx, d, nil, m, t)
			return
		}
	}
	rec, err := q.Namespaces.Lookup(ctx, m.Tenant, m.NS)
	if errors.Is(err, namespace.ErrNotFound) || (err == nil && rec.ID != m.ID) {
		// The namespace is gone (or was re-created): its writes go with it.
		n := q.Entries.NS(m.ID)
		q.Rdb.Del(ctx, pendingKey(n, m.Key))
		q.Rdb.ZRem(ctx, backlogKey(n), m.Key)
		q.Metrics.WriteBehind.WithLabelValues("dropped").Inc()
		_ = d.Ack(false)
		return
	}
	if err != nil {
		q.Log.WarnContext(ctx, "write-behind: namespace lookup failed; retrying", "err", err)
		q.settle(ctx, d, nil, m, time.Now().Add(time.Second))
		return
	}
	q.settle(ctx, d, rec, m, q.write(ctx, rec, m.Key))
}

var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

var extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// doneScript removes the pending write if it is still the one written and
// the lock is still the writer's. KEYS: pending, backlog, lock. ARGV: seq,
// key, lock token. It returns 1 when done, 0 when a newer value is
// pending, -1 when the lock was lost.
var doneScript = redis.NewScript(`
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return -1 end
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
`)

// failScript records a failed attempt if the lock is still the writer's.
// KEYS: pending, lock. ARGV: lock token, attempts, error, next attempt ms.
var failScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'attempts', ARGV[2], 'err', ARGV[3], 'next', ARGV[4])
return 1
`)

// hold renews the lock every third of its TTL while the returned context
// lives; if the lock is lost (renewal finds another token, or fails for a
// whole TTL), the context is cancelled, which aborts the origin write.
func (q *Queue) hold(ctx context.Context, lock, tok string, ttl time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			ok, err := extendScript.Run(ctx, q.Rdb, []string{lock}, tok, ttl.Milliseconds()).Int()
			switch {
			case err == nil && ok == 1:
				last = time.Now()
			case err == nil || time.Since(last) >= ttl:
				if ctx.Err() == nil {
					q.Log.WarnContext(ctx, "write-behind: lost the key's lock; abandoning the write", "lock", lock, "err", err)
				}
				cancel()
				return
			}
		}
	}()
	return ctx, cancel
}

// write sends key's pending value to the origin. It returns the zero time
// when nothing is left to do, else when to try again.
//
// A lock per key keeps one writer at a time; it is renewed while the
// writer works and every Redis change the writer makes is fenced by its
// token, so a writer that lost its lock changes nothing.
func (q *Queue) write(ctx context.Context, rec *namespace.Record, key string) time.Time {
	n := q.Entries.NS(rec.ID)
	tok := token()
	ttl := q.LockTTL
	if ttl <= 0 {
		ttl = namespace.Timeout(rec.NS) + 5*time.Second
	}
	lock := lockKey(n, key)
	ok, err := q.Rdb.SetNX(ctx, lock, tok, ttl).Result()
	if err != nil {
		q.Log.WarnContext(ctx, "write-behind: lock failed", "key", key, "err", err)
		return time.Now().Add(time.Second)
	}
	if !ok {
		// Another replica is writing this key; look again shortly (it may
		// finish before a newer pending value arrived).
		return time.Now().Add(time.Second)
	}
	defer unlockScript.Run(context.WithoutCancel(ctx), q.Rdb, []string{lock}, tok)
	wctx, stop := q.hold(ctx, lock, tok, ttl)
	defer stop()
	for range 3 {
		vals, err := q.Rdb.HMGet(wctx, pendingKey(n, key), "v", "seq", "attempts").Result()
		if err != nil {
			return time.Now().Add(time.Second)
		}
		v, ok := vals[0].(string)
		if !ok {
			q.Metrics.WriteBehind.WithLabelValues("superseded").Inc()
			return time.Time{}
		}
		seq, _ := vals[1].(string)
		start := time.Now()
		err = q.Origin.Write(wctx, rec.NS, key, []byte(v))
		q.Metrics.OriginLatency.WithLabelValues("write").Observe(time.Since(start).Seconds())
		if wctx.Err() != nil && ctx.Err() == nil {
			// The lock was lost: whoever holds it now writes.
			return time.Now().Add(time.Second)
		}
		if err != nil {
			q.Metrics.Origin.WithLabelValues("write", "error").Inc()
			q.Metrics.WriteBehind.WithLabelValues("failed").Inc()
			attempts, _ := strconv.Atoi(fmt.Sprint(vals[2]))
			next := time.Now().Add(Backoff(attempts+1, q.MaxBackoff))
			failScript.Run(wctx, q.Rdb, []string{pendingKey(n, key), lock}, tok, attempts+1, err.Error(), next.UnixMilli())
			q.Log.WarnContext(ctx, "write-behind: origin write failed; will retry", "key", key, "attempt", attempts+1, "err", err, "retry_at", next)
			return next
		}
		q.Metrics.Origin.WithLabelValues("write", "ok").Inc()
		done, err := doneScript.Run(wctx, q.Rdb, []string{pendingKey(n, key), backlogKey(n), lock}, seq, key, tok).Int()
		if err != nil {
			return time.Now().Add(time.Second)
		}
		switch done {
		case 1:
			q.Metrics.WriteBehind.WithLabelValues("written").Inc()
			return time.Time{}
		case -1:
			return time.Now().Add(time.Second)
		}
		// A newer value arrived while this one was written: send it too.
	}
	return time.Now().Add(time.Second)
}

func token() string {
	var b [12]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// settle acknowledges d once whatever remains is queued for later.
func (q *Queue) settle(ctx context.Context, d amqp.Delivery, rec *namespace.Record, m message, retry time.Time) {
	if retry.IsZero() {
		_ = d.Ack(false)
		return
	}
	if rec == nil {
		rec = &namespace.Record{Tenant: m.Tenant, ID: m.ID, NS: &cachev1.Namespace{Name: m.NS}}
	}
	if err := q.publish(ctx, rec, m.Key, retry); err != nil {
		q.Log.WarnContext(ctx, "write-behind: could not queue the retry; the broker redelivers", "key", m.Key, "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
		_ = d.Nack(false, true)
		return
	}
	_ = d.Ack(false)
}

// Backoff is the delay before attempt n (1-based): 1s doubling, capped,
// with up to 20 % jitter.
func Backoff(n int, cap time.Duration) time.Duration {
	d := time.Second << min(n-1, 20)
	if d > cap || d <= 0 {
		d = cap
	}
	return d - time.Duration(float64(d)*0.2*rand.Float64())
}

// PendingValue returns key's write not yet accepted by the origin, if any.
func (q *Queue) PendingValue(ctx context.Context, rec *namespace.Record, key string) ([]byte, bool, error) {
	v, err := q.Rdb.HGet(ctx, pendingKey(q.Entries.NS(rec.ID), key), "v").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

// Pending is a write not yet accepted by the origin.
type Pending struct {
	Key      string
	Since    time.Time
	Attempts int
	LastErr  string
	Next     time.Time
}

// ListPending pages through the namespace's backlog, oldest first.
func (q *Queue) ListPending(ctx context.Context, rec *namespace.Record, size int, token string) ([]Pending, string, error) {
	n := q.Entries.NS(rec.ID)
	offset := int64(0)
	if token != "" {
		b, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil {
			return nil, "", namespace.ErrBadToken
		}
		if offset, err = strconv.ParseInt(string(b), 10, 64); err != nil || offset < 0 {
			return nil, "", namespace.ErrBadToken
		}
	}
	zs, err := q.Rdb.ZRangeWithScores(ctx, backlogKey(n), offset, offset+int64(size)).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list pending writes: %w", err)
	}
	next := ""
	if len(zs) > size {
		zs = zs[:size]
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(offset+int64(size), 10)))
	}
	out := make([]Pending, 0, len(zs))
	for _, z := range zs {
		key, _ := z.Member.(string)
		p := Pending{Key: key, Since: time.UnixMilli(int64(z.Score))}
		vals, err := q.Rdb.HMGet(ctx, pendingKey(n, key), "attempts", "err", "next").Result()
		if err != nil {
			return nil, "", fmt.Errorf("list pending writes: %w", err)
		}
		p.Attempts, _ = strconv.Atoi(fmt.Sprint(vals[0]))
		p.LastErr, _ = vals[1].(string)
		if s, ok := vals[2].(string); ok {
			ms, _ := strconv.ParseInt(s, 10, 64)
			p.Next = time.UnixMilli(ms)
		}
		out = append(out, p)
	}
	return out, next, nil
}
