// Package store keeps tasks in Redis. Redis is the durable truth of a
// task's state; the broker only carries "generation g of task t is ready"
// notes. Every transition is one atomic script that checks what it was
// called for (the generation of a ready note, the fencing token of a
// lease), so notes delivered twice, replicas racing and workers whose lease
// has ended all change nothing.
//
// Keys (all under one hash tag, so the scripts also run on Redis Cluster):
//
//	{p}:t:<tenant>:<id>   hash, the task
//	{p}:a:<tenant>:<id>   list, the attempt log (JSON per attempt)
//	{p}:i:<tenant>        zset, creation time → id, for listing
//	{p}:q:<tenant>        set, the tenant's queue names
//	{p}:qs:<tenant>:<q>   hash, running count of a queue
//	{p}:d:<tenant>:<q>    zset, finish time → id of dead tasks
//	{p}:sched             zset, due time → "tenant|id|gen": tasks to hand to the broker
//	{p}:leases            zset, lease end → "tenant|id": running attempts
//	{p}:paused:<tenant>   set, paused queue names
//	{p}:parked:<t>:<q>    zset, "tenant|id|gen" of tasks held by a paused queue
//	{p}:outbox            zset, end time → "tenant|id|state|attempts": completion events to publish
//	{p}:callbacks         zset, due time → "tenant|id|state|attempts|try": callbacks to deliver
//	{p}:rl:<tenant>       hash, rate limits per task name and their state (see RateLimit)
//	{p}:resync:<key>      string, a failover's resync taken by one replica (see Resync)
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisbatch"
)

// States of a task.
const (
	Pending   = "pending"
	Running   = "running"
	Succeeded = "succeeded"
	Failed    = "failed"
	Cancelled = "cancelled"
)

// Errors of the store.
var (
	ErrNotFound = errors.New("task not found")
	// ErrBadCursor is a page token that no List call made.
	ErrBadCursor = errors.New("bad cursor")
	// ErrLeaseLost means the lease token no longer owns the task: the
	// attempt was ended by its hard limit or missed heartbeats, cancelled,
	// or the task was leased again.
	ErrLeaseLost = errors.New("lease lost: the attempt already ended (hard time limit, missed heartbeats or a newer lease)")
	ErrExists    = errors.New("task already exists")
	// ErrTooManyQueues: each queue is a quorum queue on the broker, so a
	// tenant's distinct queue names are capped.
	ErrTooManyQueues = fmt.Errorf("a tenant may use at most %d queues", MaxQueues)
)

// Spec is what a client sets on a task; it never changes after enqueue.
type Spec struct {
	Name           string          `json:"name"`
	Args           json.RawMessage `json:"args,omitempty"`
	Queue          string          `json:"queue"`
	SoftLimit      time.Duration   `json:"soft"`
	HardLimit      time.Duration   `json:"hard"`
	MaxRetries     int             `json:"maxRetries"`
	Backoff        time.Duration   `json:"backoff"`
	BackoffMax     time.Duration   `json:"backoffMax"`
	ETA            time.Time       `json:"eta,omitzero"`
	Expire         time.Time       `json:"expire,omitzero"`
	CallbackURL    string          `json:"callbackUrl,omitempty"`
	CallbackSecret string          `json:"callbackSecret,omitempty"`
	UniqueKey      string          `json:"uniqueKey,omitempty"`
	UniqueTTL      time.Duration   `json:"uniqueTtl,omitempty"`
	ScheduleID     string          `json:"schedule,omitempty"`
	// Trace is the W3C traceparent of what enqueued the task (a request,
	// a trigger's event), so its run, completion event and callback join
	// that trace.
	Trace string `json:"trace,omitempty"`
	// ResultArg names the field of Args that gets the result passed on by
	// a chain's step before or a chord's members (see WithArg).
	ResultArg string `json:"resultArg,omitempty"`
}

// fields are the task hash's settings fields of spec, raw its JSON.
func fields(raw []byte, spec Spec) []any {
	var expire int64
	if !spec.Expire.IsZero() {
		expire = ms(spec.Expire)
	}
	return []any{"spec", raw, "name", spec.Name, "queue", spec.Queue, "maxr", spec.MaxRetries,
		"bo", spec.Backoff.Milliseconds(), "bomax", spec.BackoffMax.Milliseconds(),
		"hardms", spec.HardLimit.Milliseconds(), "expire", expire}
}

// WithArg returns args (a JSON object, or empty) with field key set to
// the raw JSON value v: how a chain step or chord callback gets the
// results passed on to it.
func WithArg(args json.RawMessage, key string, v []byte) json.RawMessage {
	m := map[string]json.RawMessage{}
	if len(args) > 0 {
		_ = json.Unmarshal(args, &m) // an object, checked at enqueue
	}
	m[key] = v
	out, err := json.Marshal(m)
	if err != nil {
		return args
	}
	return out
}

// passed sets the result passed on to a task (its prev field) into its args.
func (sp *Spec) passed(prev string) {
	if prev != "" && sp.ResultArg != "" {
		sp.Args = WithArg(sp.Args, sp.ResultArg, []byte(prev))
	}
}

// Attempt is one run of a task.
type Attempt struct {
	Number  int    `json:"number"`
	Start   int64  `json:"start"`
	End     int64  `json:"end"`
	Outcome string `json:"outcome"`
	Error   string `json:"error"`
	Worker  string `json:"worker"`
}

// Task is a task as stored.
type Task struct {
	Tenant, ID      string
	Spec            Spec
	State           string
	Attempts        int
	Result          json.RawMessage
	Error           string
	CancelRequested bool
	CallbackState   string
	Created         time.Time
	Started         time.Time
	Finished        time.Time
	Log             []Attempt
}

// Lease is a started attempt.
type Lease struct {
	Tenant, ID string
	Token      int64
	Attempt    int
	Expires    time.Time
	Hard       time.Time
	Spec       Spec
}

// Config tunes a Store.
type Config struct {
	// Prefix of every key (wrapped in a hash tag).
	Prefix string
	// ResultTTL keeps succeeded and cancelled tasks (default 24h).
	ResultTTL time.Duration
	// DeadTTL keeps failed tasks (default 7 days).
	DeadTTL time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Observer is told about starts and ends, for metrics.
	Observer Observer
	// MaxDead caps the dead set of one queue, oldest out (default
	// 100000); the tasks themselves still expire after DeadTTL.
	MaxDead int
	// MaxWaiters caps the Wait calls served at once (default 10000).
	MaxWaiters int
}

// Observer sees every enqueue, start and end of an attempt.
type Observer interface {
	Enqueued(queue, name string)
	// Started reports an attempt and how long after its due time it began.
	Started(queue, name string, latency time.Duration)
	// Ended reports an attempt's end: state is the task's state after it
	// (pending means it will be retried), expired whether the lease ran
	// out.
	Ended(queue, name, state string, runtime time.Duration, expired bool)
}

type nopObserver struct{}

func (nopObserver) Enqueued(string, string)                           {}
func (nopObserver) Started(string, string, time.Duration)             {}
func (nopObserver) Ended(string, string, string, time.Duration, bool) {}

// Store reads and changes tasks.
type Store struct {
	rdb     redis.UniversalClient
	p       string
	cfg     Config
	waiters *waiters

	// Scripts of one kind that arrive while one is out share the next
	// round trip (a kind of its own each, so a batch of one kind never
	// waits behind another's).
	enqueues, leasing, ends redisbatch.Batcher
}

// LeasesWaiting is the number of lease scripts waiting for the round trip
// out to return.
func (s *Store) LeasesWaiting() int { return s.leasing.Len() }

// run runs script through b: one EVALSHA, in a pipeline with the others
// queued while a round trip was out, and EVAL if Redis lost the script.
func (s *Store) run(ctx context.Context, b *redisbatch.Batcher, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	var cmd *redis.Cmd
	err := b.Do(ctx, s.rdb, func(ctx context.Context, pipe redis.Pipeliner) { cmd = script.EvalSha(ctx, pipe, keys, args...) })
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		return script.Eval(ctx, s.rdb, keys, args...)
	}
	if cmd == nil { // never sent: ctx ended while it waited
		cmd = redis.NewCmd(ctx)
		cmd.SetErr(err)
	}
	return cmd
}

// New returns a Store on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.ResultTTL <= 0 {
		cfg.ResultTTL = 24 * time.Hour
	}
	if cfg.DeadTTL <= 0 {
		cfg.DeadTTL = 7 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.MaxDead <= 0 {
		cfg.MaxDead = 100000
	}
	if cfg.MaxWaiters <= 0 {
		cfg.MaxWaiters = 10000
	}
	return &Store{rdb: rdb, p: "{" + cfg.Prefix + "}", cfg: cfg, waiters: &waiters{max: cfg.MaxWaiters, chans: map[string][]chan struct{}{}}}
}

// Redis returns the client, for packages that keep their own keys next to
// the tasks.
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// Key returns a key under the store's hash tag.
func (s *Store) Key(parts ...string) string { return s.p + ":" + strings.Join(parts, ":") }

func (s *Store) task(tenant, id string) string  { return s.Key("t", tenant, id) }
func (s *Store) log(tenant, id string) string   { return s.Key("a", tenant, id) }
func (s *Store) index(tenant string) string     { return s.Key("i", tenant) }
func (s *Store) queues(tenant string) string    { return s.Key("q", tenant) }
func (s *Store) qstat(tenant, q string) string  { return s.Key("qs", tenant, q) }
func (s *Store) dead(tenant, q string) string   { return s.Key("d", tenant, q) }
func (s *Store) sched() string                  { return s.Key("sched") }
func (s *Store) leases() string                 { return s.Key("leases") }
func (s *Store) paused(tenant string) string    { return s.Key("paused", tenant) }
func (s *Store) parked(tenant, q string) string { return s.Key("parked", tenant, q) }
func (s *Store) outbox() string                 { return s.Key("outbox") }
func (s *Store) callbacks() string              { return s.Key("callbacks") }
func (s *Store) done(tenant, id string) string  { return s.Key("done", tenant, id) }
func member(tenant, id string) string           { return tenant + "|" + id }
func ms(t time.Time) int64                      { return t.UnixMilli() }
func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

// MaxAttemptLog is how many attempts a task's log keeps (the latest).
const MaxAttemptLog = 100

// MaxQueues caps the distinct queues of one tenant.
const MaxQueues = 100

// Enqueue stores a new pending task, due at spec.ETA (or now). It returns
// ErrExists, and the stored task, when the id is taken: the id is the
// idempotency key.
func (s *Store) Enqueue(ctx context.Context, tenant, id string, spec Spec) (*Task, error) {
	return s.enqueue(ctx, tenant, id, spec, 0)
}

// FastPathHold is how long the schedule entry of a task enqueued with
// EnqueueHeld waits for its caller's own publish: the pump publishes the
// note after it only if the caller died before it published, or before it
// could un-claim a failed publish.
const FastPathHold = 5 * time.Second

// EnqueueHeld is Enqueue for a caller that publishes the note of a task
// due now itself, right after (see Published and Unclaim): its schedule
// entry is due FastPathHold later, so the pump does not publish it too.
func (s *Store) EnqueueHeld(ctx context.Context, tenant, id string, spec Spec) (*Task, error) {
	return s.enqueue(ctx, tenant, id, spec, FastPathHold)
}

func (s *Store) enqueue(ctx context.Context, tenant, id string, spec Spec, hold time.Duration) (*Task, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode task: %w", err)
	}
	now := s.cfg.Now()
	due := now
	if spec.ETA.After(now) {
		due = spec.ETA
	}
	// An unused unique key is still named under the hash tag, so the
	// script's keys stay on one Cluster slot.
	ukey, unique := s.Key("u-none"), "0"
	if spec.UniqueKey != "" {
		ukey, unique = s.Key("u", tenant, spec.UniqueKey), "1"
	}
	args := append([]any{id, ms(now), ms(due), member(tenant, id), max(spec.UniqueTTL, time.Millisecond).Milliseconds(), unique,
		spec.Queue, MaxQueues, hold.Milliseconds()}, fields(raw, spec)...)
	res, err := s.run(ctx, &s.enqueues, enqueueScript,
		[]string{s.task(tenant, id), s.index(tenant), s.sched(), s.queues(tenant), ukey}, args...,
	).Result()
	if err != nil {
		return nil, fmt.Errorf("enqueue %s: %w", id, err)
	}
	if holder, ok := res.(string); ok {
		return nil, &UniqueError{Key: spec.UniqueKey, Holder: holder}
	}
	switch res.(int64) {
	case -1:
		return nil, ErrTooManyQueues
	case 0:
		t, err := s.Get(ctx, tenant, id)
		if err != nil {
			return nil, err
		}
		return t, ErrExists
	}
	s.cfg.Observer.Enqueued(spec.Queue, spec.Name)
	// The task as the script wrote it; reading it back would cost a round
	// trip and could already show it running.
	return &Task{Tenant: tenant, ID: id, Spec: spec, State: Pending, Created: fromMS(ms(now))}, nil
}

// UniqueError is returned by Enqueue when another task holds the unique
// key.
type UniqueError struct{ Key, Holder string }

func (e *UniqueError) Error() string {
	return fmt.Sprintf("uniqueKey %q is held by task %s, which is pending or running", e.Key, e.Holder)
}

// Get reads a task with its attempt log.
func (s *Store) Get(ctx context.Context, tenant, id string) (*Task, error) {
	pipe := s.rdb.Pipeline()
	h := pipe.HGetAll(ctx, s.task(tenant, id))
	l := pipe.LRange(ctx, s.log(tenant, id), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("get task %s: %w", id, err)
	}
	if len(h.Val()) == 0 {
		return nil, ErrNotFound
	}
	return decode(tenant, id, h.Val(), l.Val())
}

func decode(tenant, id string, h map[string]string, log []string) (*Task, error) {
	t := &Task{Tenant: tenant, ID: id, State: h["state"], Error: h["error"], CancelRequested: h["cancel"] == "1", CallbackState: h["cb"]}
	if err := json.Unmarshal([]byte(h["spec"]), &t.Spec); err != nil {
		return nil, fmt.Errorf("task %s: corrupt spec: %w", id, err)
	}
	t.Spec.passed(h["prev"])
	t.Attempts, _ = strconv.Atoi(h["attempts"])
	if r := h["result"]; r != "" {
		t.Result = json.RawMessage(r)
	}
	num := func(k string) time.Time { v, _ := strconv.ParseInt(h[k], 10, 64); return fromMS(v) }
	t.Created, t.Started, t.Finished = num("created"), num("started"), num("finished")
	for _, raw := range log {
		var a Attempt
		if err := json.Unmarshal([]byte(raw), &a); err == nil {
			t.Log = append(t.Log, a)
		}
	}
	return t, nil
}

// Filter selects tasks in List.
type Filter struct{ State, Queue, Name string }

func (f Filter) match(h map[string]string) bool {
	return (f.State == "" || h["state"] == f.State) && (f.Queue == "" || h["queue"] == f.Queue) && (f.Name == "" || h["name"] == f.Name)
}

// List returns up to size tasks of tenant matching f, newest first, after
// the cursor (the next of a previous call; "" for the start). It looks at
// no more than scan tasks per call, so a rare filter returns short pages
// with a cursor rather than reading the whole index at once.
func (s *Store) List(ctx context.Context, tenant string, f Filter, size int, cursor string) ([]*Task, string, error) {
	const scan = 2000
	max := "+inf"
	after := ""
	if cursor != "" {
		score, id, ok := strings.Cut(cursor, "/")
		if !ok {
			return nil, "", ErrBadCursor
		}
		if _, err := strconv.ParseInt(score, 10, 64); err != nil {
			return nil, "", ErrBadCursor
		}
		max, after = score, id
	}
	ids, err := s.rdb.ZRevRangeByScoreWithScores(ctx, s.index(tenant), &redis.ZRangeBy{Max: max, Min: "-inf", Count: scan}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list tasks: %w", err)
	}
	// Equal scores come in reverse lexicographic order; skip up to and
	// including the cursor's id.
	if after != "" {
		for i, z := range ids {
			if strconv.FormatInt(int64(z.Score), 10) != max {
				break
			}
			if z.Member.(string) == after {
				ids = ids[i+1:]
				break
			}
		}
	}
	var out []*Task
	var stale []any
	next := ""
	for start := 0; start < len(ids) && len(out) < size; start += 100 {
		batch := ids[start:min(start+100, len(ids))]
		pipe := s.rdb.Pipeline()
		hs := make([]*redis.MapStringStringCmd, len(batch))
		for i, z := range batch {
			hs[i] = pipe.HGetAll(ctx, s.task(tenant, z.Member.(string)))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, "", fmt.Errorf("list tasks: %w", err)
		}
		for i, z := range batch {
			id := z.Member.(string)
			next = strconv.FormatInt(int64(z.Score), 10) + "/" + id
			h := hs[i].Val()
			if len(h) == 0 {
				stale = append(stale, id) // expired by its retention
				continue
			}
			if !f.match(h) {
				continue
			}
			t, err := decode(tenant, id, h, nil)
			if err != nil {
				continue
			}
			out = append(out, t)
			if len(out) == size {
				break
			}
		}
	}
	if len(stale) > 0 {
		s.rdb.ZRem(ctx, s.index(tenant), stale...)
	}
	if len(ids) < scan && len(out) < size {
		next = "" // the index is exhausted
	}
	return out, next, nil
}

// Claim takes up to limit tasks that are due for the broker. A claimed
// entry comes back after rearm unless Published removes it first.
func (s *Store) Claim(ctx context.Context, limit int, rearm time.Duration) ([]Ready, error) {
	m, err := claimScript.Run(ctx, s.rdb, []string{s.sched()}, ms(s.cfg.Now()), limit, rearm.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("claim due tasks: %w", err)
	}
	out := make([]Ready, 0, len(m))
	for _, v := range m {
		r, err := ParseReady(v)
		if err != nil {
			s.rdb.ZRem(ctx, s.sched(), v)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// Ready names generation Gen of a task that is due.
type Ready struct {
	Tenant, ID string
	Gen        int64
}

func (r Ready) String() string { return fmt.Sprintf("%s|%s|%d", r.Tenant, r.ID, r.Gen) }

// ParseReady parses Ready.String.
func ParseReady(s string) (Ready, error) {
	parts := strings.Split(s, "|")
	if len(parts) != 3 {
		return Ready{}, fmt.Errorf("bad ready entry %q", s)
	}
	g, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return Ready{}, fmt.Errorf("bad ready entry %q", s)
	}
	return Ready{parts[0], parts[1], g}, nil
}

// Route reads what the broker needs to route a ready note: the task's name
// and queue. ok is false when the note is stale (the task moved on), in
// which case it is dropped from the schedule.
func (s *Store) Route(ctx context.Context, r Ready) (name, queue string, ok bool, err error) {
	v, err := s.rdb.HMGet(ctx, s.task(r.Tenant, r.ID), "state", "gen", "name", "queue").Result()
	if err != nil {
		return "", "", false, fmt.Errorf("route %s: %w", r.ID, err)
	}
	st, _ := v[0].(string)
	gen, _ := v[1].(string)
	if st != Pending || gen != strconv.FormatInt(r.Gen, 10) {
		s.rdb.ZRem(ctx, s.sched(), r.String())
		return "", "", false, nil
	}
	name, _ = v[2].(string)
	queue, _ = v[3].(string)
	return name, queue, true, nil
}

// NoteTimeout is how long a published note may go unconsumed before it is
// published again. A note is the only carrier of a pending task, and the
// broker can lose one (dead-lettered after its delivery limit, say while
// Redis is down); a duplicate is dropped by the generation check.
const NoteTimeout = 15 * time.Minute

// Published pushes a ready entry NoteTimeout ahead once the broker has
// confirmed its note; leasing (or finding the note stale) removes it.
func (s *Store) Published(ctx context.Context, r Ready) error {
	return s.rdb.ZAddXX(ctx, s.sched(), redis.Z{Score: float64(ms(s.cfg.Now().Add(NoteTimeout))), Member: r.String()}).Err()
}

// PublishedAll is Published for many entries, in one round trip.
func (s *Store) PublishedAll(ctx context.Context, rs []Ready) error {
	at := float64(ms(s.cfg.Now().Add(NoteTimeout)))
	pipe := s.rdb.Pipeline()
	for _, r := range rs {
		pipe.ZAddXX(ctx, s.sched(), redis.Z{Score: at, Member: r.String()})
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Unclaim makes a claimed entry due again after d, for a publish that
// failed: the claim's rearm is for a replica that died, not for one that
// can retry. An entry leased meanwhile (and so removed) stays removed.
func (s *Store) Unclaim(ctx context.Context, r Ready, d time.Duration) error {
	return s.rdb.ZAddXX(ctx, s.sched(), redis.Z{Score: float64(ms(s.cfg.Now().Add(d))), Member: r.String()}).Err()
}

// Lease starts an attempt of r if it is still pending at generation r.Gen.
// ok is false for a stale or duplicate note, which the caller drops.
func (s *Store) Lease(ctx context.Context, r Ready, worker string, ttl time.Duration) (l *Lease, ok bool, err error) {
	_, queue, ok, err := s.Route(ctx, r)
	if err != nil || !ok {
		return nil, false, err
	}
	return s.lease(ctx, r, queue, "", worker, ttl)
}

// LeaseIn is Lease for a note known to come from queue (the caller
// consumed it from that queue's broker queue): one round trip to Redis
// instead of two. A task found in another queue falls back to Lease.
func (s *Store) LeaseIn(ctx context.Context, r Ready, queue, worker string, ttl time.Duration) (l *Lease, ok bool, err error) {
	return s.lease(ctx, r, queue, queue, worker, ttl)
}

// lease runs the lease script with the keys of queue; check, when set,
// makes the script refuse a task of another queue.
func (s *Store) lease(ctx context.Context, r Ready, queue, check, worker string, ttl time.Duration) (l *Lease, ok bool, err error) {
	now := s.cfg.Now()
	res, err := s.run(ctx, &s.leasing, leaseScript,
		[]string{s.task(r.Tenant, r.ID), s.leases(), s.qstat(r.Tenant, queue), s.sched(), s.done(r.Tenant, r.ID), s.outbox(),
			s.paused(r.Tenant), s.parked(r.Tenant, queue), s.rl(r.Tenant)},
		r.Gen, ms(now), ttl.Milliseconds(), worker, member(r.Tenant, r.ID), s.cfg.ResultTTL.Milliseconds(), r.ID, check,
		s.cfg.DeadTTL.Milliseconds(),
	).Slice()
	if err != nil {
		return nil, false, fmt.Errorf("lease %s: %w", r.ID, err)
	}
	switch res[0].(int64) {
	case 1:
	case -4:
		return s.Lease(ctx, r, worker, ttl)
	default:
		return nil, false, nil
	}
	l = &Lease{Tenant: r.Tenant, ID: r.ID, Token: res[1].(int64), Attempt: int(res[2].(int64)),
		Expires: fromMS(res[3].(int64)), Hard: fromMS(res[4].(int64))}
	if err := json.Unmarshal([]byte(res[5].(string)), &l.Spec); err != nil {
		return nil, false, fmt.Errorf("lease %s: corrupt spec: %w", r.ID, err)
	}
	l.Spec.passed(res[7].(string))
	s.cfg.Observer.Started(l.Spec.Queue, l.Spec.Name, now.Sub(fromMS(res[6].(int64))))
	return l, true, nil
}

// Heartbeat extends the lease token by ttl (never past the hard limit). It
// reports whether a cancel was asked for, and ErrLeaseLost if the lease
// has ended.
func (s *Store) Heartbeat(ctx context.Context, tenant, id string, token int64, ttl time.Duration) (expires time.Time, cancel bool, err error) {
	res, err := heartbeatScript.Run(ctx, s.rdb, []string{s.task(tenant, id), s.leases(), s.sched()},
		token, ms(s.cfg.Now()), ttl.Milliseconds(), member(tenant, id)).Slice()
	if err != nil {
		return time.Time{}, false, fmt.Errorf("heartbeat %s: %w", id, err)
	}
	if res[0].(int64) != 1 {
		return time.Time{}, false, ErrLeaseLost
	}
	return fromMS(res[1].(int64)), res[2].(string) == "1", nil
}

// Outcome is how an attempt ended.
type Outcome struct {
	Result     json.RawMessage // success when Err is ""
	Err        string
	NoRetry    bool
	RetryAfter time.Duration // retry later without spending an attempt
}

// End ends the attempt of lease token with o and returns the task's new
// state; ErrLeaseLost if token no longer owns the task.
func (s *Store) End(ctx context.Context, tenant, id string, token int64, o Outcome) (string, error) {
	outcome := "ok"
	if o.Err != "" {
		outcome = "fail"
	}
	return s.end(ctx, tenant, id, strconv.FormatInt(token, 10), outcome, o)
}

func (s *Store) end(ctx context.Context, tenant, id, token, outcome string, o Outcome) (string, error) {
	keys, args := s.endArgs(tenant, id, token, outcome, o)
	res, err := s.run(ctx, &s.ends, endScript, keys, args...).Slice()
	if err != nil {
		return "", fmt.Errorf("end %s: %w", id, err)
	}
	return s.ended(id, outcome, res)
}

func (s *Store) endArgs(tenant, id, token, outcome string, o Outcome) (keys []string, args []any) {
	noRetry := "0"
	if o.NoRetry {
		noRetry = "1"
	}
	return []string{s.task(tenant, id), s.log(tenant, id), s.leases(), s.sched(), s.done(tenant, id), s.outbox()},
		[]any{token, ms(s.cfg.Now()), outcome, string(o.Result), o.Err, noRetry, o.RetryAfter.Milliseconds(), rand.Float64(),
			member(tenant, id), s.cfg.ResultTTL.Milliseconds(), s.cfg.DeadTTL.Milliseconds(), id, s.cfg.MaxDead, MaxAttemptLog,
			s.qstat(tenant, ""), s.dead(tenant, "")}
}

// ended reads the end script's reply.
func (s *Store) ended(id, outcome string, res []any) (string, error) {
	if len(res) > 0 && res[0] == int64(-1) {
		return "", ErrNotFound
	}
	if len(res) < 6 {
		return "", fmt.Errorf("end %s: short reply %v", id, res)
	}
	status := res[0].(int64)
	state, ended, queue, name := res[1].(string), res[2].(string), res[3].(string), res[4].(string)
	started, _ := strconv.ParseInt(res[5].(string), 10, 64)
	if status != 1 {
		if ended != "" { // refused at the hard deadline, which ended the attempt
			s.cfg.Observer.Ended(queue, name, ended, s.cfg.Now().Sub(fromMS(started)), true)
		}
		return state, ErrLeaseLost
	}
	s.cfg.Observer.Ended(queue, name, state, s.cfg.Now().Sub(fromMS(started)), outcome == "expire")
	return state, nil
}

// EndItem is one attempt for EndAll to end.
type EndItem struct {
	Tenant, ID string
	Token      int64
	Outcome    Outcome
}

// EndAll is End for each of items, in one round trip: each item keeps its
// own fencing check (its own script run) and gets its own state and
// error, at its index. If Redis has lost the script, the items it refused
// run again one by one (EVAL loads it).
func (s *Store) EndAll(ctx context.Context, items []EndItem) (states []string, errs []error) {
	states, errs = make([]string, len(items)), make([]error, len(items))
	outcomes := make([]string, len(items))
	cmds := make([]*redis.Cmd, len(items))
	pipe := s.rdb.Pipeline()
	for i, it := range items {
		outcomes[i] = "ok"
		if it.Outcome.Err != "" {
			outcomes[i] = "fail"
		}
		keys, args := s.endArgs(it.Tenant, it.ID, strconv.FormatInt(it.Token, 10), outcomes[i], it.Outcome)
		cmds[i] = endScript.EvalSha(ctx, pipe, keys, args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, it := range items {
		res, err := cmds[i].Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			states[i], errs[i] = s.End(ctx, it.Tenant, it.ID, it.Token, it.Outcome)
			continue
		}
		if err != nil {
			errs[i] = fmt.Errorf("end %s: %w", it.ID, err)
			continue
		}
		states[i], errs[i] = s.ended(it.ID, outcomes[i], res)
	}
	return states, errs
}

// Expired lists up to limit leases whose time has run out.
func (s *Store) Expired(ctx context.Context, limit int) ([][2]string, error) {
	m, err := s.rdb.ZRangeByScore(ctx, s.leases(), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(ms(s.cfg.Now()), 10), Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("expired leases: %w", err)
	}
	out := make([][2]string, 0, len(m))
	for _, v := range m {
		tenant, id, ok := strings.Cut(v, "|")
		if !ok {
			s.rdb.ZRem(ctx, s.leases(), v)
			continue
		}
		out = append(out, [2]string{tenant, id})
	}
	return out, nil
}

// Expire fails the current attempt of a task whose lease has run out; it
// does nothing when a heartbeat extended the lease meanwhile or another
// replica expired it first. changed reports whether this call did it.
func (s *Store) Expire(ctx context.Context, tenant, id string) (state string, changed bool, err error) {
	// The script drops the entry of an attempt that is no longer running.
	st, err := s.end(ctx, tenant, id, "*", "expire", Outcome{})
	if errors.Is(err, ErrNotFound) {
		return "", false, nil
	}
	if errors.Is(err, ErrLeaseLost) {
		return st, false, nil
	}
	return st, err == nil, err
}

// Cancel cancels a pending task (it will never run) or asks a running one
// to stop. It returns the task after the call.
func (s *Store) Cancel(ctx context.Context, tenant, id string) (*Task, error) {
	st, err := cancelScript.Run(ctx, s.rdb, []string{s.task(tenant, id), s.sched(), s.done(tenant, id), s.outbox()},
		ms(s.cfg.Now()), member(tenant, id), s.cfg.ResultTTL.Milliseconds(), id, s.cfg.DeadTTL.Milliseconds()).Text()
	if err != nil {
		return nil, fmt.Errorf("cancel %s: %w", id, err)
	}
	if st == "" {
		return nil, ErrNotFound
	}
	return s.Get(ctx, tenant, id)
}

// ErrState is returned by Retry for a task that is not failed or cancelled.
var ErrState = errors.New("only a failed or cancelled task can be retried")

// Retry makes a failed or cancelled task pending again, due now.
func (s *Store) Retry(ctx context.Context, tenant, id string) (*Task, error) {
	queue, err := s.rdb.HGet(ctx, s.task(tenant, id), "queue").Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("retry %s: %w", id, err)
	}
	n, err := retryScript.Run(ctx, s.rdb, []string{s.task(tenant, id), s.log(tenant, id), s.sched(), s.dead(tenant, queue)},
		ms(s.cfg.Now()), member(tenant, id), id).Int()
	if err != nil {
		return nil, fmt.Errorf("retry %s: %w", id, err)
	}
	switch n {
	case -1:
		return nil, ErrNotFound
	case 0:
		return nil, ErrState
	}
	return s.Get(ctx, tenant, id)
}

// Ended reports whether state is an end state.
func Ended(state string) bool { return state == Succeeded || state == Failed || state == Cancelled }

// QueueStats are the counts of one queue.
type QueueStats struct {
	Name                  string
	Running, Dead, Parked int64
	Paused                bool
}

// Pause pauses a queue of tenant: no task of it starts until Resume.
func (s *Store) Pause(ctx context.Context, tenant, queue string) error {
	pipe := s.rdb.TxPipeline()
	pipe.SAdd(ctx, s.paused(tenant), queue)
	pipe.SAdd(ctx, s.queues(tenant), queue)
	_, err := pipe.Exec(ctx)
	return err
}

// Resume unpauses a queue and makes its parked tasks due now.
func (s *Store) Resume(ctx context.Context, tenant, queue string) error {
	return resumeScript.Run(ctx, s.rdb, []string{s.paused(tenant), s.parked(tenant, queue), s.sched()}, queue, ms(s.cfg.Now())).Err()
}

// Queues returns the tenant's queues with their running and dead counts;
// dead tasks past their retention are pruned on the way.
func (s *Store) Queues(ctx context.Context, tenant string) ([]QueueStats, error) {
	names, err := s.rdb.SMembers(ctx, s.queues(tenant)).Result()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	cutoff := strconv.FormatInt(ms(s.cfg.Now().Add(-s.cfg.DeadTTL)), 10)
	pipe := s.rdb.Pipeline()
	run := make([]*redis.StringCmd, len(names))
	dead := make([]*redis.IntCmd, len(names))
	parked := make([]*redis.IntCmd, len(names))
	paused := make([]*redis.BoolCmd, len(names))
	for i, q := range names {
		parked[i] = pipe.ZCard(ctx, s.parked(tenant, q))
		paused[i] = pipe.SIsMember(ctx, s.paused(tenant), q)
		pipe.ZRemRangeByScore(ctx, s.dead(tenant, q), "-inf", "("+cutoff)
		run[i] = pipe.HGet(ctx, s.qstat(tenant, q), "running")
		dead[i] = pipe.ZCard(ctx, s.dead(tenant, q))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	out := make([]QueueStats, len(names))
	for i, q := range names {
		r, _ := run[i].Int64()
		out[i] = QueueStats{Name: q, Running: r, Dead: dead[i].Val(), Parked: parked[i].Val(), Paused: paused[i].Val()}
	}
	return out, nil
}

// Holds reports whether lease token still owns the task (an error counts
// as yes, so a Redis hiccup does not free a slot early).
func (s *Store) Holds(ctx context.Context, tenant, id string, token int64) bool {
	v, err := s.rdb.HMGet(ctx, s.task(tenant, id), "state", "token").Result()
	if err != nil {
		return true
	}
	st, _ := v[0].(string)
	tok, _ := v[1].(string)
	return st == Running && tok == strconv.FormatInt(token, 10)
}

// Ending is a task's end, waiting to be announced.
type Ending struct {
	Tenant, ID, State string
	Attempts          int
	Try               int // callback deliveries tried so far
}

func (e Ending) member() string {
	return fmt.Sprintf("%s|%s|%s|%d", e.Tenant, e.ID, e.State, e.Attempts)
}

func (e Ending) cbMember() string { return fmt.Sprintf("%s|%d", e.member(), e.Try) }

func parseEnding(v string) (Ending, bool) {
	p := strings.Split(v, "|")
	if len(p) < 4 || len(p) > 5 {
		return Ending{}, false
	}
	e := Ending{Tenant: p[0], ID: p[1], State: p[2]}
	var err error
	if e.Attempts, err = strconv.Atoi(p[3]); err != nil {
		return Ending{}, false
	}
	if len(p) == 5 {
		if e.Try, err = strconv.Atoi(p[4]); err != nil {
			return Ending{}, false
		}
	}
	return e, true
}

func (s *Store) claimEndings(ctx context.Context, key string, limit int, rearm time.Duration) ([]Ending, error) {
	m, err := claimScript.Run(ctx, s.rdb, []string{key}, ms(s.cfg.Now()), limit, rearm.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("claim %s: %w", key, err)
	}
	var out []Ending
	for _, v := range m {
		if e, ok := parseEnding(v); ok {
			out = append(out, e)
		} else {
			s.rdb.ZRem(ctx, key, v)
		}
	}
	return out, nil
}

// ClaimEndings takes up to limit ends to announce; an entry comes back
// after rearm unless Announced removes it.
func (s *Store) ClaimEndings(ctx context.Context, limit int, rearm time.Duration) ([]Ending, error) {
	return s.claimEndings(ctx, s.outbox(), limit, rearm)
}

// Announced records that e's event is published, and queues its callback
// if the task has one, in one transaction.
func (s *Store) Announced(ctx context.Context, e Ending, callback bool) error {
	pipe := s.rdb.TxPipeline()
	pipe.ZRem(ctx, s.outbox(), e.member())
	if callback {
		pipe.ZAdd(ctx, s.callbacks(), redis.Z{Score: float64(ms(s.cfg.Now())), Member: e.cbMember()})
		pipe.HSet(ctx, s.task(e.Tenant, e.ID), "cb", "pending")
	}
	_, err := pipe.Exec(ctx)
	return err
}

// EndedTasks reads the tasks of es (without their attempt logs) in one round
// trip; a task that is gone is nil. A task that cannot be read (a key of
// another type, a corrupt spec) has its own error in errs, so one bad
// record holds back only its own end, not the batch. A hash left without
// a spec (a late write revived an expired task's key) counts as gone.
func (s *Store) EndedTasks(ctx context.Context, es []Ending) (ts []*Task, errs []error, err error) {
	pipe := s.rdb.Pipeline()
	hs := make([]*redis.MapStringStringCmd, len(es))
	for i, e := range es {
		hs[i] = pipe.HGetAll(ctx, s.task(e.Tenant, e.ID))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		var reply redis.Error
		if !errors.As(err, &reply) {
			return nil, nil, fmt.Errorf("read ended tasks: %w", err)
		}
	}
	ts, errs = make([]*Task, len(es)), make([]error, len(es))
	for i, e := range es {
		h, err := hs[i].Result()
		switch {
		case err != nil:
			errs[i] = fmt.Errorf("read task %s: %w", e.ID, err)
		case h["spec"] == "":
		default:
			ts[i], errs[i] = decode(e.Tenant, e.ID, h, nil)
		}
	}
	return ts, errs, nil
}

// AnnouncedAll is Announced for the ends es[i] with done[i] set, whose
// tasks are ts[i] (nil when gone, which also counts as announced), in one
// transaction.
func (s *Store) AnnouncedAll(ctx context.Context, es []Ending, ts []*Task, done []bool) error {
	pipe := s.rdb.TxPipeline()
	n := 0
	for i, e := range es {
		if !done[i] {
			continue
		}
		n++
		pipe.ZRem(ctx, s.outbox(), e.member())
		if t := ts[i]; t != nil && t.Spec.CallbackURL != "" {
			pipe.ZAdd(ctx, s.callbacks(), redis.Z{Score: float64(ms(s.cfg.Now())), Member: e.cbMember()})
			pipe.HSet(ctx, s.task(e.Tenant, e.ID), "cb", "pending")
		}
	}
	if n == 0 {
		return nil
	}
	_, err := pipe.Exec(ctx)
	return err
}

// ClaimCallbacks takes up to limit due callbacks.
func (s *Store) ClaimCallbacks(ctx context.Context, limit int, rearm time.Duration) ([]Ending, error) {
	return s.claimEndings(ctx, s.callbacks(), limit, rearm)
}

// CallbackDone records the outcome of a callback delivery: delivered,
// given up, or retried at next (when next is not zero).
func (s *Store) CallbackDone(ctx context.Context, e Ending, state string, next time.Time) error {
	pipe := s.rdb.TxPipeline()
	pipe.ZRem(ctx, s.callbacks(), e.cbMember())
	if !next.IsZero() {
		e.Try++
		pipe.ZAdd(ctx, s.callbacks(), redis.Z{Score: float64(ms(next)), Member: e.cbMember()})
	}
	// Only a task that still exists gets the state (HSET would revive an
	// expired one without its fields).
	if n, _ := s.rdb.Exists(ctx, s.task(e.Tenant, e.ID)).Result(); n == 1 {
		pipe.HSet(ctx, s.task(e.Tenant, e.ID), "cb", state)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Prune removes index entries of tasks, chains and groups whose retention
// has ended, for every tenant. List prunes what it reads; this catches the
// rest, so an index does not grow with what nobody lists. Only entries
// older than the shortest retention are looked at. It returns how many it
// removed.
func (s *Store) Prune(ctx context.Context) (int, error) {
	cutoff := strconv.FormatInt(ms(s.cfg.Now().Add(-min(s.cfg.ResultTTL, s.cfg.DeadTTL))), 10)
	removed := 0
	indexes := []struct {
		pattern string
		record  func(key, id string) string
	}{
		{s.Key("i", "*"), func(key, id string) string { return s.task(strings.TrimPrefix(key, s.Key("i", "")), id) }},
		{s.Key("cvs", "*"), func(key, id string) string {
			_, tenant, _ := strings.Cut(strings.TrimPrefix(key, s.Key("cvs", "")), ":")
			return s.canvas(tenant, id)
		}},
	}
	for _, ix := range indexes {
		iter := s.rdb.Scan(ctx, 0, ix.pattern, 100).Iterator()
		for iter.Next(ctx) {
			n, err := s.pruneIndex(ctx, iter.Val(), cutoff, ix.record)
			removed += n
			if err != nil {
				return removed, err
			}
		}
		if err := iter.Err(); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// pruneIndex removes the ids older than cutoff from the sorted set key
// whose record (record(key, id)) no longer exists.
func (s *Store) pruneIndex(ctx context.Context, key, cutoff string, record func(key, id string) string) (int, error) {
	removed := 0
	for offset := int64(0); ; {
		ids, err := s.rdb.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "-inf", Max: cutoff, Offset: offset, Count: 500}).Result()
		if err != nil {
			return removed, fmt.Errorf("prune %s: %w", key, err)
		}
		if len(ids) == 0 {
			return removed, nil
		}
		pipe := s.rdb.Pipeline()
		ex := make([]*redis.IntCmd, len(ids))
		for i, id := range ids {
			ex[i] = pipe.Exists(ctx, record(key, id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return removed, fmt.Errorf("prune %s: %w", key, err)
		}
		var gone []any
		for i, id := range ids {
			if ex[i].Val() == 0 {
				gone = append(gone, id)
			}
		}
		if len(gone) > 0 {
			if err := s.rdb.ZRem(ctx, key, gone...).Err(); err != nil {
				return removed, err
			}
			removed += len(gone)
		}
		offset += int64(len(ids) - len(gone))
	}
}

// Janitor takes the janitor's turn for ttl: true for one caller across
// all replicas per period.
func (s *Store) Janitor(ctx context.Context, ttl time.Duration) bool {
	ok, err := s.rdb.SetNX(ctx, s.Key("janitor"), "1", ttl).Result()
	return err == nil && ok
}

// primaryScript reads the replication id of the server that holds the
// keys (the script names one, so Cluster routes it to the right shard). A
// replica promoted by a failover takes a new one.
var primaryScript = redis.NewScript(`
return string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
`)

// Primary returns the replication id of the Redis primary holding the
// tasks; it changes when a failover promotes another server.
func (s *Store) Primary(ctx context.Context) (string, error) {
	id, err := primaryScript.Run(ctx, s.rdb, []string{s.sched()}).Text()
	if err != nil {
		return "", fmt.Errorf("redis replication id: %w", err)
	}
	return id, nil
}

// Resync makes due now every pending task whose note was published and
// not yet leased (its schedule entry pushed up to NoteTimeout ahead), once
// per failover and round across replicas (key names them both). A
// failover can lose the write that consumed a note (a lease, a rate-limit
// deferral, a parking) together with what followed it (the attempt's
// end), leaving a pending task whose note is gone and whose entry waits
// out NoteTimeout; a duplicate note is dropped at lease time. It returns
// how many entries it made due.
func (s *Store) Resync(ctx context.Context, key string) (int, error) {
	ok, err := s.rdb.SetNX(ctx, s.Key("resync", key), "1", time.Hour).Result()
	if err != nil || !ok {
		return 0, err
	}
	now := s.cfg.Now()
	upto := strconv.FormatInt(ms(now.Add(NoteTimeout+time.Minute)), 10)
	from := "(" + strconv.FormatInt(ms(now), 10)
	n := 0
	for offset := int64(0); ; {
		m, err := s.rdb.ZRangeByScore(ctx, s.sched(), &redis.ZRangeBy{Min: from, Max: upto, Offset: offset, Count: 500}).Result()
		if err != nil {
			return n, fmt.Errorf("resync: %w", err)
		}
		if len(m) == 0 {
			return n, nil
		}
		rs := make([]Ready, 0, len(m))
		pipe := s.rdb.Pipeline()
		var hs []*redis.SliceCmd
		for _, v := range m {
			r, err := ParseReady(v)
			if err != nil {
				continue
			}
			rs = append(rs, r)
			hs = append(hs, pipe.HMGet(ctx, s.task(r.Tenant, r.ID), "state", "gen", "due"))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return n, fmt.Errorf("resync: %w", err)
		}
		pipe = s.rdb.Pipeline()
		k := 0
		for i, r := range rs {
			v := hs[i].Val()
			st, _ := v[0].(string)
			gen, _ := v[1].(string)
			due, _ := v[2].(string)
			d, _ := strconv.ParseInt(due, 10, 64)
			// An ETA or a retry's backoff still ahead is not a note in flight.
			if st != Pending || gen != strconv.FormatInt(r.Gen, 10) || d > ms(now) {
				continue
			}
			// XX: an entry leased meanwhile stays removed.
			pipe.ZAddXX(ctx, s.sched(), redis.Z{Score: float64(ms(now)), Member: r.String()})
			k++
		}
		if k > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return n, fmt.Errorf("resync: %w", err)
			}
			n += k
		}
		offset += int64(len(m) - k) // the k made due left the range
	}
}
