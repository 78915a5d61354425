// Package entries keeps cached values in Redis and closes the race between
// a fill and an invalidation there, atomically, with Lua scripts.
//
// A namespace's data lives under one Redis Cluster hash tag (its id), so
// the scripts can touch all of a namespace's keys at once:
//
//	e:<key>   hash: the value, when it was stored, until when it is fresh,
//	          whether it is a negative (origin 404) entry, the fill time
//	          (for early refresh), the epoch and the tags. Its Redis TTL is
//	          its freshness plus the stale-while-revalidate window.
//	l:<key>   the fill lease: a random token, set NX with a TTL. While it
//	          exists, one filler (on any replica) loads the key from the
//	          origin and everyone else waits for its value.
//	epoch     bumped by "invalidate everything"; an entry of an older epoch
//	          is a miss.
//	seq       bumped by every tag or prefix invalidation.
//	fences    sorted set "t:<tag>" / "p:<prefix>" scored by the seq of
//	          their latest invalidation; fencefloor is the seq below which
//	          fences were trimmed.
//	idx       sorted set of keys scored by expiry, for prefix invalidation.
//	tz:<tag>  sorted set of the keys carrying a tag, scored by when they
//	          expire; each store drops the expired ones, so a tag that
//	          keeps getting keys does not grow without bound.
//	w:<key>   write-through writes of the key in flight, and how many
//	          began in all, to detect overlapping writes.
//
// A fill commits only if, atomically: its lease token is still there (a key
// invalidation or a write deletes the lease), the epoch is the one it
// started with, and no tag or prefix of its value was invalidated after it
// started. So a value loaded before an invalidation is never written after
// it (DESIGN.md invariant 8).
package entries

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store reads and writes the entries of every namespace.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// MaxFences bounds the remembered tag and prefix invalidations of a
	// namespace; a fill older than the oldest one forgotten is refused
	// (and retried), never wrongly committed.
	MaxFences int
	// Channel, when set, is where every invalidation and write is
	// announced for near caches (see Notice).
	Channel string
}

// New returns a Store with keys under prefix.
func New(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix, MaxFences: 10_000}
}

// NS addresses one namespace's data.
type NS struct {
	id   string
	base string
}

// NS returns the data of the namespace with id.
func (s *Store) NS(id string) NS { return NS{id: id, base: s.prefix + ":d:{" + id + "}"} }

// Notice formats a near-cache notice: namespace id, kind ('k' key, 't'
// tag, 'p' prefix, 'a' all) and value.
func Notice(id string, kind byte, value string) string {
	return id + "\x00" + string(kind) + value
}

// notify announces changes after they are made. It is best effort: a
// near copy that misses its notice lives out its short TTL.
func (s *Store) notify(ctx context.Context, n NS, kind byte, values ...string) {
	if s.Channel == "" {
		return
	}
	_, _ = s.rdb.Pipelined(context.WithoutCancel(ctx), func(p redis.Pipeliner) error {
		for _, v := range values {
			p.Publish(ctx, s.Channel, Notice(n.id, kind, v))
		}
		return nil
	})
}

func (n NS) entry(key string) string { return n.base + ":e:" + key }
func (n NS) lease(key string) string { return n.base + ":l:" + key }
func (n NS) tag(tag string) string   { return n.base + ":tz:" + tag }

// legacyTag is where earlier versions kept a tag's keys, as a plain set
// that was never pruned; it is still read when the tag is invalidated.
func (n NS) legacyTag(tag string) string { return n.base + ":t:" + tag }
func (n NS) epoch() string               { return n.base + ":epoch" }
func (n NS) seq() string                 { return n.base + ":seq" }
func (n NS) fences() string              { return n.base + ":fences" }
func (n NS) floor() string               { return n.base + ":fencefloor" }
func (n NS) idx() string                 { return n.base + ":idx" }
func (n NS) guard(key string) string     { return n.base + ":w:" + key }

// Entry is a stored value.
type Entry struct {
	Value    []byte
	Negative bool
	Stored   time.Time
	Fresh    time.Time
	// Delta is how long the fill took, for early refresh.
	Delta time.Duration
	Tags  []string
}

// Read is what a read sees.
type Read struct {
	// Now is Redis's clock, which every replica shares.
	Now time.Time
	// Entry is the current value, nil when there is none (missing, expired
	// or from before an invalidate-everything).
	Entry *Entry
	// Leased is whether a fill is in progress.
	Leased bool
}

// Fresh reports whether r has a value within its TTL.
func (r Read) Fresh() bool { return r.Entry != nil && r.Now.Before(r.Entry.Fresh) }

const readLua = `
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ep = redis.call('GET', KEYS[2]) or '0'
local e = redis.call('HMGET', KEYS[1], 'v', 'at', 'fresh', 'neg', 'd', 'ep', 'tg')
local leased = redis.call('EXISTS', KEYS[3])
if e[6] ~= ep then e[1] = false end
return {now, e[1], e[2], e[3], e[4], e[5], e[7], leased}
`

var readScript = redis.NewScript(readLua)

func ms(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

func str(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// Get reads key.
func (s *Store) Get(ctx context.Context, n NS, key string) (Read, error) {
	res, err := readScript.Run(ctx, s.rdb, []string{n.entry(key), n.epoch(), n.lease(key)}).Slice()
	if err != nil {
		return Read{}, fmt.Errorf("read %q: %w", key, err)
	}
	r := Read{Now: time.UnixMilli(ms(res[0])), Leased: ms(res[7]) == 1}
	if v, ok := str(res[1]); ok {
		e := &Entry{
			Value:    []byte(v),
			Stored:   time.UnixMilli(ms(res[2])),
			Fresh:    time.UnixMilli(ms(res[3])),
			Negative: res[4] == "1",
			Delta:    time.Duration(ms(res[5])) * time.Millisecond,
		}
		if tg, _ := str(res[6]); tg != "" {
			e.Tags = strings.Split(tg, "\n")
		}
		r.Entry = e
	}
	return r, nil
}

// Lease is a fill in progress: the right to store the key's next value.
type Lease struct {
	Key   string
	token string
	epoch string
	seq   string
}

// ErrLeased means another filler holds the key's lease.
var ErrLeased = errors.New("another fill is in progress")

// ErrFilled means a fresh value appeared before the lease was taken.
var ErrFilled = errors.New("filled meanwhile")

const acquireLua = `
if ARGV[3] == '0' then
  local ep = redis.call('GET', KEYS[2]) or '0'
  local e = redis.call('HMGET', KEYS[1], 'fresh', 'ep')
  if e[1] and e[2] == ep then
    local t = redis.call('TIME')
    local now = t[1] * 1000 + math.floor(t[2] / 1000)
    if tonumber(e[1]) > now then return {2} end
  end
end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
return {1, redis.call('GET', KEYS[2]) or '0', redis.call('GET', KEYS[4]) or '0'}
`

var acquireScript = redis.NewScript(acquireLua)

func token() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Acquire takes the fill lease of key for ttl. Unless refresh is set it
// refuses with ErrFilled when a fresh value is already there; it refuses
// with ErrLeased when another fill holds the lease.
func (s *Store) Acquire(ctx context.Context, n NS, key string, ttl time.Duration, refresh bool) (*Lease, error) {
	force := "0"
	if refresh {
		force = "1"
	}
	tok := token()
	res, err := acquireScript.Run(ctx, s.rdb, []string{n.entry(key), n.epoch(), n.lease(key), n.seq()},
		tok, ttl.Milliseconds(), force).Slice()
	if err != nil {
		return nil, fmt.Errorf("lease %q: %w", key, err)
	}
	switch ms(res[0]) {
	case 0:
		return nil, ErrLeased
	case 2:
		return nil, ErrFilled
	}
	ep, _ := str(res[1])
	seq, _ := str(res[2])
	return &Lease{Key: key, token: tok, epoch: ep, seq: seq}, nil
}

// Release gives up a lease without storing anything.
func (s *Store) Release(ctx context.Context, n NS, l *Lease) error {
	return releaseScript.Run(ctx, s.rdb, []string{n.lease(l.Key)}, l.token).Err()
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Value is what a fill or a write stores.
type Value struct {
	Bytes    []byte
	Negative bool
	// TTL is how long it is fresh; Keep how long it is kept in all (TTL
	// plus the stale-while-revalidate window).
	TTL, Keep time.Duration
	Delta     time.Duration
	Tags      []string
}

// storeLua writes an entry. KEYS: entry, lease, epoch, seq, fences, floor,
// idx, write guard, pending, backlog, pending seq, then one tag set per
// tag. ARGV: mode, token, epoch, seq, value, negative, ttl ms, keep ms,
// delta ms, key, tags joined by newlines, three mode arguments, then the
// tags.
//
// Modes: "fill" commits a fill under its lease (token, epoch, seq);
// "set" stores unconditionally; "pend" stores and records the value as
// the key's pending write-behind write in the same step (mode arguments:
// tenant, namespace name), so the cache and the write the origin will
// get never disagree; "wt" ends a write-through write begun by beginLua
// (token: its number; mode argument 1: "1" when no other write was in
// flight when it began): it stores only when no other write to the key
// overlapped it, and otherwise removes the value, since the origin's
// order of overlapping writes is unknown.
const storeLua = `
local ntags = #KEYS - 11
local mode = ARGV[1]
local key = ARGV[10]
local ep = redis.call('GET', KEYS[3]) or '0'
if mode == 'fill' then
  if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
  if ep ~= ARGV[3] then return -1 end
  local since = tonumber(ARGV[4])
  if tonumber(redis.call('GET', KEYS[6]) or '0') > since then return -2 end
  local fs = redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. since, '+inf')
  for _, m in ipairs(fs) do
    local kind, val = string.sub(m, 1, 2), string.sub(m, 3)
    if kind == 'p:' and string.sub(key, 1, #val) == val then return -3 end
    if kind == 't:' then
      for i = 1, ntags do
        if ARGV[14 + i] == val then return -3 end
      end
    end
  end
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if mode == 'wt' then
  local s = tonumber(redis.call('HGET', KEYS[8], 's') or '0')
  if redis.call('HINCRBY', KEYS[8], 'n', -1) <= 0 then redis.call('DEL', KEYS[8]) end
  if ARGV[12] ~= '1' or s ~= tonumber(ARGV[2]) then
    redis.call('DEL', KEYS[1], KEYS[2])
    return -4
  end
end
local res = 1
if mode == 'pend' then
  res = redis.call('INCR', KEYS[11])
  local at = redis.call('HGET', KEYS[9], 'at') or now
  redis.call('HSET', KEYS[9], 'v', ARGV[5], 'seq', res, 'at', at, 't', ARGV[12], 'ns', ARGV[13])
  redis.call('ZADD', KEYS[10], 'NX', at, key)
end
redis.call('DEL', KEYS[2])
local keep = tonumber(ARGV[8])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[5], 'at', now, 'fresh', now + tonumber(ARGV[7]), 'neg', ARGV[6], 'd', ARGV[9], 'ep', ep, 'tg', ARGV[11])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
redis.call('ZADD', KEYS[7], now + keep, key)
for i = 1, ntags do
  redis.call('ZREMRANGEBYSCORE', KEYS[11 + i], '-inf', now)
  redis.call('ZADD', KEYS[11 + i], 'GT', now + keep, key)
  if redis.call('PTTL', KEYS[11 + i]) < keep then redis.call('PEXPIRE', KEYS[11 + i], keep) end
end
return res
`

var storeScript = redis.NewScript(storeLua)

// Why a fill was not stored.
var (
	ErrLeaseLost   = errors.New("the key was invalidated or written while it was filled")
	ErrEpochMoved  = errors.New("the namespace was invalidated while the key was filled")
	ErrFenced      = errors.New("a tag or prefix of the key was invalidated while it was filled")
	ErrFencesAhead = errors.New("too many invalidations while the key was filled")
)

// ErrOverlapped means another write to the key overlapped a write-through
// write; the value was removed rather than stored.
var ErrOverlapped = errors.New("another write to the key overlapped this one; the cached value was removed")

// storeArgs are the mode-dependent parts of a store.
type storeArgs struct {
	mode  string
	lease *Lease
	write *Write
	pend  *Pend
}

func (s *Store) store(ctx context.Context, n NS, key string, a storeArgs, v Value) (int64, error) {
	keys := []string{n.entry(key), n.lease(key), n.epoch(), n.seq(), n.fences(), n.floor(), n.idx(), n.guard(key)}
	neg := "0"
	if v.Negative {
		neg = "1"
	}
	var tok, ep, seq string
	var extra [3]string
	if l := a.lease; l != nil {
		tok, ep, seq = l.token, l.epoch, l.seq
	}
	if w := a.write; w != nil {
		tok = strconv.FormatInt(w.n, 10)
		if w.clean {
			extra[0] = "1"
		}
	}
	if p := a.pend; p != nil {
		keys = append(keys, p.Pending, p.Backlog, p.Seq)
		extra[0], extra[1] = p.Tenant, p.Name
	} else {
		// Unused; named so that every key the script may touch is declared.
		keys = append(keys, n.entry(key), n.entry(key), n.entry(key))
	}
	args := []any{a.mode, tok, ep, seq, v.Bytes, neg, max(v.TTL.Milliseconds(), 1), max(v.Keep.Milliseconds(), v.TTL.Milliseconds(), 1),
		v.Delta.Milliseconds(), key, strings.Join(v.Tags, "\n"), extra[0], extra[1], extra[2]}
	for _, t := range v.Tags {
		keys = append(keys, n.tag(t))
		args = append(args, t)
	}
	res, err := storeScript.Run(ctx, s.rdb, keys, args...).Int64()
	if err != nil {
		return 0, fmt.Errorf("store %q: %w", key, err)
	}
	switch res {
	case 0:
		return 0, ErrLeaseLost
	case -1:
		return 0, ErrEpochMoved
	case -2:
		return 0, ErrFencesAhead
	case -3:
		return 0, ErrFenced
	case -4:
		return 0, ErrOverlapped
	}
	return res, nil
}

// Commit stores a fill's value if nothing invalidated the key since the
// lease was taken; otherwise it stores nothing and says why.
func (s *Store) Commit(ctx context.Context, n NS, l *Lease, v Value) error {
	_, err := s.store(ctx, n, l.Key, storeArgs{mode: "fill", lease: l}, v)
	return err
}

// Set stores a written value unconditionally. It takes away any fill's
// lease, so a fill that loaded the origin before this write cannot
// overwrite it.
func (s *Store) Set(ctx context.Context, n NS, key string, v Value) error {
	_, err := s.store(ctx, n, key, storeArgs{mode: "set"}, v)
	s.notify(ctx, n, 'k', key)
	return err
}

// Pend names the Redis keys (in the namespace's slot, see NS.Key) and
// fields of a pending write-behind write.
type Pend struct {
	Pending, Backlog, Seq string
	Tenant, Name          string
}

// SetPending stores a write-behind value and records it as the key's
// pending write in one atomic step, and returns the write's sequence
// number: concurrent writes to one key leave the cache holding the same
// value the origin is going to get.
func (s *Store) SetPending(ctx context.Context, n NS, key string, v Value, p Pend) (int64, error) {
	seq, err := s.store(ctx, n, key, storeArgs{mode: "pend", pend: &p}, v)
	s.notify(ctx, n, 'k', key)
	return seq, err
}

// Write is a write-through write in progress (between BeginWrite and
// SetWritten or EndWrite).
type Write struct {
	Key   string
	n     int64
	clean bool
}

// beginLua counts a write-through write in. KEYS: write guard. ARGV: ttl
// ms. It returns the write's number, negative when other writes were in
// flight.
var beginScript = redis.NewScript(`
local busy = tonumber(redis.call('HGET', KEYS[1], 'n') or '0') > 0
local s = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if busy then return -s end
return s
`)

// BeginWrite starts a write-through write of key, before its origin write;
// ttl bounds how long it counts as in flight if its writer dies.
func (s *Store) BeginWrite(ctx context.Context, n NS, key string, ttl time.Duration) (*Write, error) {
	r, err := beginScript.Run(ctx, s.rdb, []string{n.guard(key)}, max(ttl.Milliseconds(), 1)).Int64()
	if err != nil {
		return nil, fmt.Errorf("begin write %q: %w", key, err)
	}
	if r < 0 {
		return &Write{Key: key, n: -r}, nil
	}
	return &Write{Key: key, n: r, clean: true}, nil
}

// SetWritten ends w once the origin accepted it: it stores v if no other
// write to the key overlapped w, else removes the key's value (and returns
// ErrOverlapped), since which of them the origin kept is unknown.
func (s *Store) SetWritten(ctx context.Context, n NS, w *Write, v Value) error {
	_, err := s.store(ctx, n, w.Key, storeArgs{mode: "wt", write: w}, v)
	s.notify(ctx, n, 'k', w.Key)
	return err
}

var endScript = redis.NewScript(`
if redis.call('HINCRBY', KEYS[1], 'n', -1) <= 0 then redis.call('DEL', KEYS[1]) end
return 0
`)

// EndWrite ends w without storing anything (its origin write failed).
func (s *Store) EndWrite(ctx context.Context, n NS, w *Write) error {
	return endScript.Run(ctx, s.rdb, []string{n.guard(w.Key)}).Err()
}

var deleteScript = redis.NewScript(`
local n = 0
for i = 1, #KEYS, 2 do
  n = n + redis.call('DEL', KEYS[i])
  redis.call('DEL', KEYS[i + 1])
end
return n
`)

// Invalidate removes keys and takes away their fill leases. It returns how
// many values were removed.
func (s *Store) Invalidate(ctx context.Context, n NS, keys ...string) (int64, error) {
	defer s.notify(ctx, n, 'k', keys...)
	var total int64
	for len(keys) > 0 {
		batch := keys[:min(len(keys), 256)]
		keys = keys[len(batch):]
		rk := make([]string, 0, 2*len(batch))
		for _, k := range batch {
			rk = append(rk, n.entry(k), n.lease(k))
		}
		c, err := deleteScript.Run(ctx, s.rdb, rk).Int64()
		if err != nil {
			return total, fmt.Errorf("invalidate: %w", err)
		}
		total += c
	}
	return total, nil
}

// fenceLua records a tag or prefix invalidation. KEYS: seq, fences, floor.
// ARGV: member, max fences.
var fenceScript = redis.NewScript(`
local s = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], s, ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  redis.call('SET', KEYS[3], old[#old])
end
return s
`)

func (s *Store) fence(ctx context.Context, n NS, member string) error {
	return fenceScript.Run(ctx, s.rdb, []string{n.seq(), n.fences(), n.floor()}, member, s.MaxFences).Err()
}

// InvalidateTag removes every key carrying tag, and keeps fills that
// started before from storing a value with that tag.
func (s *Store) InvalidateTag(ctx context.Context, n NS, tag string) (int64, error) {
	if err := s.fence(ctx, n, "t:"+tag); err != nil {
		return 0, fmt.Errorf("invalidate tag %q: %w", tag, err)
	}
	defer s.notify(ctx, n, 't', tag)
	var total int64
	var batch []string
	flush := func() error {
		c, err := s.Invalidate(ctx, n, batch...)
		total += c
		batch = batch[:0]
		return err
	}
	add := func(k string) error {
		batch = append(batch, k)
		if len(batch) == 256 {
			return flush()
		}
		return nil
	}
	// ZSCAN yields member, score, member, score…
	iter := s.rdb.ZScan(ctx, n.tag(tag), 0, "", 500).Iterator()
	for i := 0; iter.Next(ctx); i++ {
		if i%2 == 0 {
			if err := add(iter.Val()); err != nil {
				return total, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return total, fmt.Errorf("invalidate tag %q: %w", tag, err)
	}
	legacy := s.rdb.SScan(ctx, n.legacyTag(tag), 0, "", 500).Iterator()
	for legacy.Next(ctx) {
		if err := add(legacy.Val()); err != nil {
			return total, err
		}
	}
	if err := legacy.Err(); err != nil {
		return total, fmt.Errorf("invalidate tag %q: %w", tag, err)
	}
	if err := flush(); err != nil {
		return total, err
	}
	return total, nil
}

// InvalidatePrefix removes every key starting with prefix, and keeps fills
// that started before from storing such a key.
func (s *Store) InvalidatePrefix(ctx context.Context, n NS, prefix string) (int64, error) {
	if err := s.fence(ctx, n, "p:"+prefix); err != nil {
		return 0, fmt.Errorf("invalidate prefix %q: %w", prefix, err)
	}
	defer s.notify(ctx, n, 'p', prefix)
	var total int64
	var batch []string
	iter := s.rdb.ZScan(ctx, n.idx(), 0, globEscape(prefix)+"*", 500).Iterator()
	odd := false
	for iter.Next(ctx) {
		// ZSCAN yields member, score, member, score…
		odd = !odd
		if !odd {
			continue
		}
		batch = append(batch, iter.Val())
		if len(batch) == 256 {
			c, err := s.Invalidate(ctx, n, batch...)
			total += c
			if err != nil {
				return total, err
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return total, fmt.Errorf("invalidate prefix %q: %w", prefix, err)
	}
	c, err := s.Invalidate(ctx, n, batch...)
	return total + c, err
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\^`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// InvalidateAll retires every value of the namespace at once.
func (s *Store) InvalidateAll(ctx context.Context, n NS) error {
	if err := s.rdb.Incr(ctx, n.epoch()).Err(); err != nil {
		return fmt.Errorf("invalidate namespace: %w", err)
	}
	s.notify(ctx, n, 'a', "")
	return nil
}

// Key returns a Redis key of the namespace's own (in its hash slot) for
// other packages' data, e.g. the write-behind backlog.
func (n NS) Key(parts ...string) string { return n.base + ":" + strings.Join(parts, ":") }

// Retire invalidates every value of a deleted namespace and lets its
// bookkeeping keys expire after keep, by when its values are gone too.
func (s *Store) Retire(ctx context.Context, n NS, keep time.Duration, extra ...string) error {
	if err := s.InvalidateAll(ctx, n); err != nil {
		return err
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range append([]string{n.epoch(), n.seq(), n.fences(), n.floor(), n.idx()}, extra...) {
			p.PExpire(ctx, k, keep)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("retire namespace: %w", err)
	}
	return nil
}
