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
//	t:<tag>   set of the keys carrying a tag.
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
func (n NS) tag(tag string) string   { return n.base + ":t:" + tag }
func (n NS) epoch() string           { return n.base + ":epoch" }
func (n NS) seq() string             { return n.base + ":seq" }
func (n NS) fences() string          { return n.base + ":fences" }
func (n NS) floor() string           { return n.base + ":fencefloor" }
func (n NS) idx() string             { return n.base + ":idx" }

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
// idx, then one tag set per tag. ARGV: mode ("fill" or "set"), token,
// epoch, seq, value, negative, ttl ms, keep ms, delta ms, key, tags joined
// by newlines, then the tags.
const storeLua = `
local ntags = #KEYS - 7
local key = ARGV[10]
local ep = redis.call('GET', KEYS[3]) or '0'
if ARGV[1] == 'fill' then
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
        if ARGV[11 + i] == val then return -3 end
      end
    end
  end
end
redis.call('DEL', KEYS[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local keep = tonumber(ARGV[8])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[5], 'at', now, 'fresh', now + tonumber(ARGV[7]), 'neg', ARGV[6], 'd', ARGV[9], 'ep', ep, 'tg', ARGV[11])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
redis.call('ZADD', KEYS[7], now + keep, key)
for i = 1, ntags do
  redis.call('SADD', KEYS[7 + i], key)
  if redis.call('PTTL', KEYS[7 + i]) < keep then redis.call('PEXPIRE', KEYS[7 + i], keep) end
end
return 1
`

var storeScript = redis.NewScript(storeLua)

// Why a fill was not stored.
var (
	ErrLeaseLost   = errors.New("the key was invalidated or written while it was filled")
	ErrEpochMoved  = errors.New("the namespace was invalidated while the key was filled")
	ErrFenced      = errors.New("a tag or prefix of the key was invalidated while it was filled")
	ErrFencesAhead = errors.New("too many invalidations while the key was filled")
)

func (s *Store) store(ctx context.Context, n NS, mode, key string, l *Lease, v Value) error {
	keys := []string{n.entry(key), n.lease(key), n.epoch(), n.seq(), n.fences(), n.floor(), n.idx()}
	neg := "0"
	if v.Negative {
		neg = "1"
	}
	var tok, ep, seq string
	if l != nil {
		tok, ep, seq = l.token, l.epoch, l.seq
	}
	args := []any{mode, tok, ep, seq, v.Bytes, neg, max(v.TTL.Milliseconds(), 1), max(v.Keep.Milliseconds(), v.TTL.Milliseconds(), 1),
		v.Delta.Milliseconds(), key, strings.Join(v.Tags, "\n")}
	for _, t := range v.Tags {
		keys = append(keys, n.tag(t))
		args = append(args, t)
	}
	res, err := storeScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return fmt.Errorf("store %q: %w", key, err)
	}
	switch res {
	case 0:
		return ErrLeaseLost
	case -1:
		return ErrEpochMoved
	case -2:
		return ErrFencesAhead
	case -3:
		return ErrFenced
	}
	return nil
}

// Commit stores a fill's value if nothing invalidated the key since the
// lease was taken; otherwise it stores nothing and says why.
func (s *Store) Commit(ctx context.Context, n NS, l *Lease, v Value) error {
	return s.store(ctx, n, "fill", l.Key, l, v)
}

// Set stores a written value unconditionally. It takes away any fill's
// lease, so a fill that loaded the origin before this write cannot
// overwrite it.
func (s *Store) Set(ctx context.Context, n NS, key string, v Value) error {
	err := s.store(ctx, n, "set", key, nil, v)
	s.notify(ctx, n, 'k', key)
	return err
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
	iter := s.rdb.SScan(ctx, n.tag(tag), 0, "", 500).Iterator()
	var batch []string
	flush := func() error {
		c, err := s.Invalidate(ctx, n, batch...)
		total += c
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 256 {
			if err := flush(); err != nil {
				return total, err
			}
		}
	}
	if err := iter.Err(); err != nil {
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
