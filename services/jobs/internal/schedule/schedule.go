// Package schedule runs periodic tasks: a cron expression in a time zone,
// or a fixed interval.
//
// Every replica runs a Ticker. A ticker claims due schedules for a lease
// (Lease), so replicas split the due schedules between them and never
// fire one tick at the same time. A due tick is fired by enqueueing the task
// with the id "<schedule>-<tick in Unix ms>", and only then is the
// schedule advanced, with a compare-and-set on its next tick. Replicas
// racing for a tick, or a replica dying between the two steps, therefore
// enqueue the same id, which the task store takes only once: each tick
// runs exactly once and none is skipped by a crash.
//
// Ticks missed while every replica was down (or while the replicas fell
// behind): every tick less than MisfireGrace (1m) old when it can first be
// fired runs, late, once; older ones are skipped, except the oldest missed
// tick, which fires once on recovery.
package schedule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones without the host's tz database

	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// MinInterval is the shortest interval of a schedule.
const MinInterval = 100 * time.Millisecond

// ErrNotFound means no such schedule for the tenant.
var ErrNotFound = errors.New("schedule not found")

// Timing is when a schedule fires.
type Timing struct {
	cron     cron.Schedule
	loc      *time.Location
	interval time.Duration
	anchor   time.Time
}

// ParseTiming checks the timing fields of s.
func ParseTiming(s *jobsv1.Schedule, anchor time.Time) (Timing, error) {
	var t Timing
	hasCron, hasInterval := s.GetCron() != "", s.GetInterval() != nil
	if hasCron == hasInterval {
		return t, errors.New("cron or interval: give exactly one")
	}
	if hasInterval {
		if err := s.GetInterval().CheckValid(); err != nil {
			return t, fmt.Errorf("interval: %w", err)
		}
		t.interval = s.GetInterval().AsDuration()
		if t.interval < MinInterval {
			return t, fmt.Errorf("interval: %s, at least %s", t.interval, MinInterval)
		}
		if s.GetTimeZone() != "" {
			return t, errors.New("timeZone: only with cron")
		}
		t.anchor = anchor
		return t, nil
	}
	c, err := cron.ParseStandard(s.GetCron())
	if err != nil || strings.HasPrefix(strings.TrimSpace(s.GetCron()), "TZ=") || strings.HasPrefix(strings.TrimSpace(s.GetCron()), "CRON_TZ=") {
		if err == nil {
			err = errors.New("give the time zone in timeZone")
		}
		return t, fmt.Errorf("cron: %q: %v", s.GetCron(), err)
	}
	t.cron = c
	t.loc = time.UTC
	if tz := s.GetTimeZone(); tz != "" {
		if t.loc, err = time.LoadLocation(tz); err != nil || tz == "Local" {
			return t, fmt.Errorf("timeZone: %q is not an IANA time zone", tz)
		}
	}
	// The cron library answers the zero time for an expression that never
	// matches (30 February); stored, that tick would be due forever and
	// hold the head of the due set against every other schedule.
	if t.Next(time.Now()).IsZero() {
		return t, fmt.Errorf("cron: %q never fires", s.GetCron())
	}
	return t, nil
}

// Next returns the first tick strictly after after.
func (t Timing) Next(after time.Time) time.Time {
	if t.cron != nil {
		return t.cron.Next(after.In(t.loc))
	}
	n := after.Sub(t.anchor)/t.interval + 1
	if after.Before(t.anchor) {
		return t.anchor
	}
	return t.anchor.Add(n * t.interval)
}

// Store keeps schedules next to the tasks.
//
//	{p}:s:<tenant>:<id>  hash: def (protojson), anchor, next, last, lastTask, created
//	{p}:si:<tenant>      zset: created → id
//	{p}:sdue             zset: next tick → "tenant|id" (paused schedules are absent)
type Store struct {
	rdb   redis.UniversalClient
	tasks *store.Store
	// MaxSchedules caps the schedules of one tenant (default 1000).
	MaxSchedules int
}

// NewStore returns a Store keeping its keys under the task store's prefix.
func NewStore(tasks *store.Store) *Store { return &Store{rdb: tasks.Redis(), tasks: tasks} }

func (s *Store) key(tenant, id string) string { return s.tasks.Key("s", tenant, id) }
func (s *Store) index(tenant string) string   { return s.tasks.Key("si", tenant) }
func (s *Store) due() string                  { return s.tasks.Key("sdue") }

// Record is a stored schedule.
type Record struct {
	Tenant, ID string
	Def        *jobsv1.Schedule
	Anchor     time.Time
	Next       time.Time
	Last       time.Time
	LastTask   string
}

// Proto renders r.
func (r *Record) Proto() *jobsv1.Schedule {
	p := proto.Clone(r.Def).(*jobsv1.Schedule)
	p.Id = r.ID
	if !r.Next.IsZero() && !p.Paused {
		p.NextRunTime = tsOf(r.Next)
	}
	if !r.Last.IsZero() {
		p.LastRunTime = tsOf(r.Last)
	}
	p.LastTaskId = r.LastTask
	if p.Task != nil {
		p.Task.CallbackSecret = "" // input only
	}
	return p
}

// Timing parses r's timing.
func (r *Record) Timing() (Timing, error) { return ParseTiming(r.Def, r.Anchor) }

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "s" + hex.EncodeToString(b[:])
}

// definition strips the output-only fields.
func definition(s *jobsv1.Schedule) *jobsv1.Schedule {
	d := proto.Clone(s).(*jobsv1.Schedule)
	d.Id, d.NextRunTime, d.LastRunTime, d.LastTaskId = "", nil, nil, ""
	return d
}

func (s *Store) maxSchedules() int {
	if s.MaxSchedules > 0 {
		return s.MaxSchedules
	}
	return 1000
}

// createScript stores a schedule unless the tenant is at its cap.
// KEYS: schedule, index, due. ARGV: max, id, member, def, now, next, due
// score ("" when paused). Returns 1, or 0 at the cap.
var createScript = redis.NewScript(`
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'def', ARGV[4], 'anchor', ARGV[5], 'next', ARGV[6], 'created', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[3], ARGV[7], ARGV[3]) end
return 1
`)

// Create stores a new schedule; def must be validated.
func (s *Store) Create(ctx context.Context, tenant string, def *jobsv1.Schedule, now time.Time) (*Record, error) {
	r := &Record{Tenant: tenant, ID: newID(), Def: definition(def), Anchor: now}
	t, err := r.Timing()
	if err != nil {
		return nil, err
	}
	r.Next = t.Next(now)
	raw, err := protojson.Marshal(r.Def)
	if err != nil {
		return nil, err
	}
	due := ""
	if !r.Def.Paused {
		due = strconv.FormatInt(r.Next.UnixMilli(), 10)
	}
	n, err := createScript.Run(ctx, s.rdb, []string{s.key(tenant, r.ID), s.index(tenant), s.due()},
		s.maxSchedules(), r.ID, tenant+"|"+r.ID, raw, now.UnixMilli(), r.Next.UnixMilli(), due).Int()
	if err != nil {
		return nil, fmt.Errorf("create schedule: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: a tenant may have at most %d", ErrTooManySchedules, s.maxSchedules())
	}
	return r, nil
}

// Get reads a schedule.
func (s *Store) Get(ctx context.Context, tenant, id string) (*Record, error) {
	h, err := s.rdb.HGetAll(ctx, s.key(tenant, id)).Result()
	if err != nil {
		return nil, fmt.Errorf("get schedule: %w", err)
	}
	if len(h) == 0 {
		return nil, ErrNotFound
	}
	r := &Record{Tenant: tenant, ID: id, Def: &jobsv1.Schedule{}, LastTask: h["lastTask"]}
	if err := protojson.Unmarshal([]byte(h["def"]), r.Def); err != nil {
		return nil, fmt.Errorf("schedule %s: corrupt: %w", id, err)
	}
	msOf := func(k string) time.Time {
		v, _ := strconv.ParseInt(h[k], 10, 64)
		if v == 0 {
			return time.Time{}
		}
		return time.UnixMilli(v)
	}
	r.Anchor, r.Next, r.Last = msOf("anchor"), msOf("next"), msOf("last")
	return r, nil
}

// List lists schedules, newest first, from offset.
func (s *Store) List(ctx context.Context, tenant string, offset, size int) ([]*Record, bool, error) {
	ids, err := s.rdb.ZRevRange(ctx, s.index(tenant), int64(offset), int64(offset+size)).Result()
	if err != nil {
		return nil, false, fmt.Errorf("list schedules: %w", err)
	}
	more := len(ids) > size
	if more {
		ids = ids[:size]
	}
	var out []*Record
	for _, id := range ids {
		r, err := s.Get(ctx, tenant, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		out = append(out, r)
	}
	return out, more, nil
}

// Replace stores a changed definition; the next tick is recomputed from
// now, and a paused schedule leaves the due set.
func (s *Store) Replace(ctx context.Context, r *Record, now time.Time) error {
	t, err := r.Timing()
	if err != nil {
		return err
	}
	r.Next = t.Next(now)
	raw, err := protojson.Marshal(definition(r.Def))
	if err != nil {
		return err
	}
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, s.key(r.Tenant, r.ID), "def", raw, "next", r.Next.UnixMilli())
	if r.Def.Paused {
		pipe.ZRem(ctx, s.due(), r.Tenant+"|"+r.ID)
	} else {
		pipe.ZAdd(ctx, s.due(), redis.Z{Score: float64(r.Next.UnixMilli()), Member: r.Tenant + "|" + r.ID})
	}
	_, err = pipe.Exec(ctx)
	return err
}

// Delete removes a schedule.
func (s *Store) Delete(ctx context.Context, tenant, id string) error {
	pipe := s.rdb.TxPipeline()
	del := pipe.Del(ctx, s.key(tenant, id))
	pipe.ZRem(ctx, s.index(tenant), id)
	pipe.ZRem(ctx, s.due(), tenant+"|"+id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("delete schedule: %w", err)
	}
	if del.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

// Lease is how long a replica holds the schedules it claimed: another
// replica takes them over only if it has not advanced them by then.
const Lease = 10 * time.Second

// claimScript takes due schedules for one replica by pushing their score
// a lease ahead. KEYS: due. ARGV: now, limit, leaseMs.
var claimScript = redis.NewScript(`
local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, v in ipairs(m) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), v) end
return m
`)

// Due claims up to limit schedules whose next tick has come. They are
// this replica's until Advance or Release, or until Lease passes, so two
// replicas never fire one tick at once and the due work splits between
// them.
func (s *Store) Due(ctx context.Context, now time.Time, limit int) ([][2]string, error) {
	m, err := claimScript.Run(ctx, s.rdb, []string{s.due()}, now.UnixMilli(), limit, Lease.Milliseconds()).StringSlice()
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, v := range m {
		if tenant, id, ok := strings.Cut(v, "|"); ok {
			out = append(out, [2]string{tenant, id})
		}
	}
	return out, nil
}

// Release hands a claimed schedule back, due at next (if it is still in
// the due set: a paused or deleted one is not brought back).
func (s *Store) Release(ctx context.Context, tenant, id string, next time.Time) {
	s.rdb.ZAddXX(ctx, s.due(), redis.Z{Score: float64(next.UnixMilli()), Member: tenant + "|" + id})
}

// advanceScript moves a schedule from tick to next, if it still is at
// tick. KEYS: schedule, due. ARGV: tick, next, member, taskID.
var advanceScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'next') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'next', ARGV[2], 'last', ARGV[1], 'lastTask', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
`)

// Advance moves r past its tick; false if another replica did first.
func (s *Store) Advance(ctx context.Context, r *Record, tick, next time.Time, taskID string) (bool, error) {
	n, err := advanceScript.Run(ctx, s.rdb, []string{s.key(r.Tenant, r.ID), s.due()},
		tick.UnixMilli(), next.UnixMilli(), r.Tenant+"|"+r.ID, taskID).Int()
	return n == 1, err
}

// Drop removes a dangling due entry.
func (s *Store) Drop(ctx context.Context, tenant, id string) {
	s.rdb.ZRem(ctx, s.due(), tenant+"|"+id)
}

// ErrTooManySchedules is returned by Create at a tenant's cap.
var ErrTooManySchedules = errors.New("too many schedules")
