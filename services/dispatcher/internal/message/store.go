// Package message records what the dispatcher did with each event: the
// message itself (body included, so it can be resent), its delivery
// state per endpoint, the attempt log, dead letters and deliveries held
// while an endpoint is disabled. Everything expires after the retention
// period and every key is scoped by tenant.
//
// Layout (P is the configured prefix; {t} is the tenant as a Cluster hash
// tag, so one tenant's keys live in one slot):
//
//	P:msg:{t}:<id>      hash: meta (binary, or JSON before), bz (body,
//	                    zstd) or body (raw) and +1, +2, ... (its further
//	                    chunks), d:<endpoint> (binary delivery state, or
//	                    JSON before), dl:<endpoint> (JSON dead letter)
//	P:att:{t}:<id>      list of attempts (protobuf binary; JSON when
//	                    logged by earlier versions), oldest first; a
//	                    string while it holds one
//	P:dl:{t}            sorted set "<id> <endpoint>" by dead-letter time
//	P:dle:{t}:<ep>      sorted set of message ids by dead-letter time
//	P:held:{t}:<ep>     sorted set of message ids held while disabled
//	P:ids:{t}           stream of message ids as they were recorded (entry
//	                    field i): a stream keeps them in listpacks, about
//	                    40 bytes an id where a sorted set took 120
//	P:recent:{t}        sorted set of message ids by create time (unix
//	                    ms), as indexed before P:ids; read until it expires
//	P:send:{t}:<id>     SendMessage idempotency key
package message

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/redisbatch"
)

// Errors returned by Store.
var (
	ErrNotFound = errors.New("message not found")
	ErrBadToken = errors.New("invalid page token")
)

// Delivery states.
const (
	StatusPending   = "pending"
	StatusRetrying  = "retrying"
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
	StatusHeld      = "held"
)

// MaxSnippet bounds the stored part of a response body.
const MaxSnippet = 4 << 10

// Message is an event as the dispatcher keeps it.
type Message struct {
	ID string `json:"-"`
	// Orig is the id the event was sent with when it is stored under
	// another (see RecordFor); empty when they are the same.
	Orig        string    `json:"orig,omitempty"`
	Source      string    `json:"source"`
	Type        string    `json:"type"`
	RoutingKey  string    `json:"key"`
	ContentType string    `json:"content_type,omitempty"`
	EventTime   time.Time `json:"event_time,omitzero"`
	CreateTime  time.Time `json:"create_time"`
	Body        []byte    `json:"-"`
}

// Delivery is the state of a message at one endpoint.
type Delivery struct {
	Status   string    `json:"status"`
	Attempts int       `json:"attempts"`
	Next     time.Time `json:"next,omitzero"`
	// Copy is the task copy (task.Task.Copy) whose attempt led to a
	// retry: the one copy that may owe that retry's task.
	Copy string `json:"copy,omitempty"`
}

// Store is the Redis-backed message store.
type Store struct {
	rdb       redis.UniversalClient
	prefix    string
	retention time.Duration
	// OnAttempt, if set, adds its own writes for each attempt recorded to
	// the same pipeline (package listen streams attempts with it).
	OnAttempt func(ctx context.Context, pipe redis.Pipeliner, tenant, id string, a *dispatcherv1.Attempt)
	batch     redisbatch.Batcher // Settle
	records   redisbatch.Batcher // RecordFor
	// retentionMs is retention in ms as a script argument, boxed once:
	// an int64 boxed on every call is an allocation.
	retentionMs any
}

// New returns a Store keeping records for retention.
func New(rdb redis.UniversalClient, prefix string, retention time.Duration) *Store {
	return &Store{rdb: rdb, prefix: prefix, retention: retention, batch: redisbatch.Batcher{Tx: true}, retentionMs: retention.Milliseconds()}
}

// Retention is how long records are kept.
func (s *Store) Retention() time.Duration { return s.retention }

// Redis is the store's client.
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// The keys written for every delivery are concatenated: one allocation
// each, where Sprintf made four.
func (s *Store) msgKey(t, id string) string  { return s.prefix + ":msg:{" + t + "}:" + id }
func (s *Store) attKey(t, id string) string  { return s.prefix + ":att:{" + t + "}:" + id }
func (s *Store) dlKey(t string) string       { return fmt.Sprintf("%s:dl:{%s}", s.prefix, t) }
func (s *Store) dleKey(t, ep string) string  { return fmt.Sprintf("%s:dle:{%s}:%s", s.prefix, t, ep) }
func (s *Store) heldKey(t, ep string) string { return fmt.Sprintf("%s:held:{%s}:%s", s.prefix, t, ep) }
func (s *Store) recentKey(t string) string   { return s.prefix + ":ids:{" + t + "}" }

// legacyRecentKey is the sorted set that indexed messages before the
// stream at recentKey; read until it expires.
func (s *Store) legacyRecentKey(t string) string { return fmt.Sprintf("%s:recent:{%s}", s.prefix, t) }

// recordScript writes a message's meta (ARGV[1]; its further chunks and
// the body are the ARGV[6] field and value pairs after it) and TTL
// (ARGV[2] ms) in one step unless the message exists, and a pending
// delivery (ARGV[3]) for each of the fields after the body that has none.
// A new message is also indexed in the tenant's stream of recent ids
// (KEYS[2], entry i = ARGV[4]), which drops entries older than ARGV[5]
// (unix ms). For a message that existed it returns its meta and, per
// field, 1 if that delivery is under way (a worker has written a state
// beyond pending, other than the retry after the first attempt: see
// RecordFor). Done as separate
// commands, a crash (or a lost connection) after the first left a message
// with no body and no TTL that every later Record took for complete: a
// resend then delivered an empty body and the key never expired.
//
// A delivery state is binary (encodeDelivery: byte 2 the status code,
// byte 3 the attempts when below 128) or JSON as stored before.
var recordScript = redisbatch.NewScript(`
local eps = 7 + 2 * tonumber(ARGV[6])
if redis.call('HSETNX', KEYS[1], 'meta', ARGV[1]) == 1 then
  for i = 7, eps - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  for i = eps, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], ARGV[3]) end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('XADD', KEYS[2], 'MINID', '=', ARGV[5], '*', 'i', ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {1}
end
local function under(v)
  if string.byte(v, 1) == 1 then
    local st, n = string.byte(v, 2), string.byte(v, 3)
    return st ~= 1 and not (st == 2 and n == 1)
  end
  local d = cjson.decode(v)
  return d.status ~= 'pending' and not (d.status == 'retrying' and d.attempts == 1)
end
local meta, i = redis.call('HGET', KEYS[1], 'meta'), 1
while true do
  local c = redis.call('HGET', KEYS[1], 'm+' .. i)
  if not c then break end
  meta, i = meta .. c, i + 1
end
local out = {0, meta}
for i = eps, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if not v then redis.call('HSET', KEYS[1], ARGV[i], ARGV[3]) end
  local u = 0
  if v and under(v) then u = 1 end
  out[#out + 1] = u
end
return out
`)

// ErrIDTaken is returned by RecordFor when the id belongs to a message of
// another source: two sources' events may share an id (a provider's, or a
// body hash), and they are different messages.
var ErrIDTaken = errors.New("message id is taken by another source")

// Record stores m unless a message with its id exists. It reports whether
// m was new.
func (s *Store) Record(ctx context.Context, tenant string, m *Message) (bool, error) {
	created, _, err := s.RecordFor(ctx, tenant, m, nil)
	return created, err
}

// RecordFor is Record that also records a pending delivery of m for
// each of endpoints that has none, and returns which of them are under
// way (nil for a new message), in the same round trip: the fan-out needs both for every event. A
// delivery still pending is not under way: its task may never have been
// published (the fan-out failed or crashed before the confirm), so a
// replayed event publishes it again; a second copy of a task is harmless
// (package admit). Nor is a delivery retrying after its first attempt:
// the fan-out's own first attempt (its fast path) may have settled it
// and lost its retry task with the broker before the confirm; the
// replayed first attempt finds the attempt made and publishes that retry
// again (deliver.Worker). Deliveries are recorded before their tasks so that
// the fan-out makes one write per event, not two.
func (s *Store) RecordFor(ctx context.Context, tenant string, m *Message, endpoints []string) (created bool, existing map[string]bool, err error) {
	// meta first: the script sets it alone, the other fields after it.
	fields := append(chunks("meta", encodeMeta(m), metaChunk), encodeBody(m.Body)...)
	args := make([]any, 0, 6+len(fields)+len(endpoints))
	args = append(args, fields[1], s.retentionMs, encodeDelivery(Delivery{Status: StatusPending}),
		m.ID, time.Now().Add(-s.retention).UnixMilli(), len(fields)/2-1)
	args = append(args, fields[2:]...)
	for _, ep := range endpoints {
		args = append(args, "d:"+ep)
	}
	keys := []string{s.msgKey(tenant, m.ID), s.recentKey(tenant)}
	// Events recorded together share a round trip.
	var cmd *redis.Cmd
	err = s.records.Do(ctx, s.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		cmd = recordScript.EvalSha(ctx, pipe, keys, args...)
	})
	var res []any
	if err == nil {
		res, err = cmd.Slice()
	}
	if err == nil && len(res) == 0 {
		err = errors.New("empty reply")
	}
	if err != nil {
		return false, nil, fmt.Errorf("record message: %w", err)
	}
	if n, _ := res[0].(int64); n == 1 {
		return true, nil, nil // a new message: nothing under way
	}
	existing = map[string]bool{}
	var prev Message
	if meta, _ := res[1].(string); decodeMeta(meta, &prev) != nil || prev.Source != m.Source || prev.sentAs(m.ID) != m.sentAs(m.ID) {
		return false, nil, fmt.Errorf("%w: %q is a message of source %q", ErrIDTaken, m.ID, prev.Source)
	}
	for i, v := range res[2:] {
		if n, _ := v.(int64); n == 1 && i < len(endpoints) {
			existing[endpoints[i]] = true
		}
	}
	return false, existing, nil
}

// sentAs is the id m was sent with, when it is stored under id.
func (m *Message) sentAs(id string) string {
	if m.Orig != "" {
		return m.Orig
	}
	return id
}

// Get returns a message and its deliveries by endpoint id.
func (s *Store) Get(ctx context.Context, tenant, id string) (*Message, map[string]Delivery, error) {
	if id == "" || len(id) > 255 {
		return nil, nil, ErrNotFound
	}
	vals, err := s.rdb.HGetAll(ctx, s.msgKey(tenant, id)).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("read message: %w", err)
	}
	if vals["meta"] == "" {
		return nil, nil, ErrNotFound
	}
	m := &Message{ID: id}
	if err := decodeMeta(joinChunks(vals, "meta", metaChunk), m); err != nil {
		return nil, nil, fmt.Errorf("decode message: %w", err)
	}
	if m.Body, err = decodeBody(vals); err != nil {
		return nil, nil, err
	}
	ds := map[string]Delivery{}
	for k, v := range vals {
		if ep, ok := strings.CutPrefix(k, "d:"); ok {
			if d, err := decodeDelivery(v); err == nil {
				ds[ep] = d
			}
		}
	}
	return m, ds, nil
}

// Delivery returns the state of one delivery; ErrNotFound if it has none
// (the message expired, or never reached the endpoint).
func (s *Store) Delivery(ctx context.Context, tenant, id, ep string) (Delivery, error) {
	v, err := s.rdb.HGet(ctx, s.msgKey(tenant, id), "d:"+ep).Result()
	if errors.Is(err, redis.Nil) {
		return Delivery{}, ErrNotFound
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("read delivery: %w", err)
	}
	d, err := decodeDelivery(v)
	if err != nil {
		return Delivery{}, fmt.Errorf("decode delivery: %w", err)
	}
	return d, nil
}

// InitDeliveries records a pending delivery for each endpoint that has none.
func (s *Store) InitDeliveries(ctx context.Context, tenant, id string, endpoints []string) error {
	if len(endpoints) == 0 {
		return nil
	}
	pending := encodeDelivery(Delivery{Status: StatusPending})
	pipe := s.rdb.Pipeline()
	for _, ep := range endpoints {
		pipe.HSetNX(ctx, s.msgKey(tenant, id), "d:"+ep, pending)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("record deliveries: %w", err)
	}
	return nil
}

// SetDelivery overwrites the state of a delivery.
func (s *Store) SetDelivery(ctx context.Context, tenant, id, ep string, d Delivery) error {
	err := s.batch.Do(ctx, s.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		s.queueDelivery(ctx, pipe, tenant, id, ep, d)
	})
	if err != nil {
		return fmt.Errorf("record delivery: %w", err)
	}
	return nil
}

// markDeliveredScript records a delivery as delivered unless it already
// is (binary: status code 3 in byte 2; or JSON as stored before), and
// leaves an expired (or deleted) message alone.
var markDeliveredScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and (string.find(v, '"status":"delivered"', 1, true) or (string.byte(v, 1) == 1 and string.byte(v, 2) == 3)) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`)

// MarkDelivered records that a delivery succeeded, for a copy of a task
// whose message was found delivered already: it repairs a state that a
// failure left behind without overwriting the attempt count of one that
// was written.
func (s *Store) MarkDelivered(ctx context.Context, tenant, id, ep string, attempts int) error {
	v := encodeDelivery(Delivery{Status: StatusDelivered, Attempts: attempts})
	if err := markDeliveredScript.Run(ctx, s.rdb, []string{s.msgKey(tenant, id)}, "d:"+ep, v).Err(); err != nil {
		return fmt.Errorf("record delivery: %w", err)
	}
	return nil
}

// setFieldScript sets a field of a message that still exists. A plain
// HSET on a message past its retention would create a hash holding only
// that field, with no TTL: a key that never expires.
var setFieldScript = redisbatch.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`)

func (s *Store) queueDelivery(ctx context.Context, pipe redis.Pipeliner, tenant, id, ep string, d Delivery) {
	v := encodeDelivery(d)
	setFieldScript.EvalSha(ctx, pipe, []string{s.msgKey(tenant, id)}, "d:"+ep, v)
}

// Snippet returns a response body as it is stored: at most MaxSnippet
// bytes, cut at a character boundary, and valid UTF-8 with each run of
// invalid bytes shown as U+FFFD. A subscriber may answer with any bytes
// (binary, Latin-1, or UTF-8 cut mid-character by the 4 KiB cap), but
// protobuf strings must be UTF-8: unsanitised, such an answer made the
// attempt unrecordable and its dead letter fail to encode, so the delivery
// task was retried forever instead of being dead-lettered.
func Snippet(s string) string {
	if len(s) <= MaxSnippet && utf8.ValidString(s) {
		return s
	}
	s = strings.ToValidUTF8(s[:min(len(s), MaxSnippet)], "\uFFFD")
	for len(s) > MaxSnippet {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// AddAttempt appends to the attempt log. The snippet is replaced by its
// Snippet.
func (s *Store) AddAttempt(ctx context.Context, tenant, id string, a *dispatcherv1.Attempt) error {
	v, err := s.encodeAttempt(a)
	if err != nil {
		return err
	}
	err = s.batch.Do(ctx, s.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		s.pushAttempt(ctx, pipe, tenant, id, a, v)
	})
	if err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	return nil
}

// encodeAttempt sanitises a's snippet and encodes a for the log.
func (s *Store) encodeAttempt(a *dispatcherv1.Attempt) ([]byte, error) {
	a.ResponseSnippet = Snippet(a.ResponseSnippet)
	v, err := encodeAttempt(a)
	if err != nil {
		return nil, fmt.Errorf("encode attempt: %w", err)
	}
	return v, nil
}

// pushAttemptLua appends ARGV[1] to the attempt log KEYS[1] and keeps it
// ARGV[2] ms. Most logs hold one attempt, and a list costs some 110 bytes
// more than a string holding the same entry: so the first attempt is
// stored as a string, which becomes a list when a second one comes (that
// copies the one entry once; later ones are pushed).
const pushAttemptLua = `
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  if t == 'string' then
    local first = redis.call('GET', KEYS[1])
    redis.call('DEL', KEYS[1])
    redis.call('RPUSH', KEYS[1], first)
  end
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
`

var pushAttemptScript = redisbatch.NewScript(pushAttemptLua + "return 0")

// settleScript is pushAttemptLua and then, as setFieldScript does, the
// field ARGV[3] of the message KEYS[2] set to ARGV[4] if the message
// still exists: an attempt and the state it led to in one script, so
// that they are written together even when a settle's transaction has
// to send some of its scripts again (redisbatch.Batcher).
var settleScript = redisbatch.NewScript(pushAttemptLua + `
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
return 0
`)

// readAttemptsScript returns the entries ARGV[1] to ARGV[2] (LRANGE's
// indexes) of the attempt log KEYS[1], or its one entry whatever the
// range when it is a string (see pushAttemptScript).
var readAttemptsScript = redis.NewScript(`
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  return {redis.call('GET', KEYS[1])}
end
return redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
`)

// pushAttempt queues the log write of a, encoded as v.
func (s *Store) pushAttempt(ctx context.Context, pipe redis.Pipeliner, tenant, id string, a *dispatcherv1.Attempt, v []byte) {
	pushAttemptScript.EvalSha(ctx, pipe, []string{s.attKey(tenant, id)}, v, s.retentionMs)
	if s.OnAttempt != nil {
		s.OnAttempt(ctx, pipe, tenant, id, a)
	}
}

// pushAttemptState is pushAttempt and queueDelivery of the state d of
// (id, ep) in one script.
func (s *Store) pushAttemptState(ctx context.Context, pipe redis.Pipeliner, tenant, id string, a *dispatcherv1.Attempt, v []byte, ep string, d Delivery) {
	settleScript.EvalSha(ctx, pipe, []string{s.attKey(tenant, id), s.msgKey(tenant, id)}, v, s.retentionMs, "d:"+ep, encodeDelivery(d))
	if s.OnAttempt != nil {
		s.OnAttempt(ctx, pipe, tenant, id, a)
	}
}

// Attempts pages through the attempt log, oldest first. Page tokens are
// opaque offsets: the log is append-only, so offsets stay valid.
//
// Each attempt is numbered by its place among its endpoint's attempts in
// the log. The worker stores the same number (a resend carries on the
// count), but attempts logged before it did were stored as 1 again after a
// resend, and the log stays the authority. So the page is read together with the entries before
// it; the log is bounded by the retry schedule times the endpoints.
func (s *Store) Attempts(ctx context.Context, tenant, id string, size int, token string) ([]*dispatcherv1.Attempt, string, error) {
	off, err := decodeOffset(token)
	if err != nil {
		return nil, "", err
	}
	vals, err := readAttemptsScript.Run(ctx, s.rdb, []string{s.attKey(tenant, id)}, 0, off+size).StringSlice()
	if err != nil {
		return nil, "", fmt.Errorf("read attempts: %w", err)
	}
	next := ""
	if len(vals) > off+size {
		vals = vals[:off+size]
		next = encodeOffset(off + size)
	}
	count := map[string]int32{}
	out := make([]*dispatcherv1.Attempt, 0, size)
	for i, v := range vals {
		a, err := decodeAttempt(v)
		if err != nil {
			return nil, "", err
		}
		count[a.GetEndpointId()]++
		if i < off {
			continue
		}
		a.Number = count[a.GetEndpointId()]
		out = append(out, a)
	}
	return out, next, nil
}

// DeadLetter records that the delivery of id to ep failed for good, and
// why. An empty ep is a message that could not be fanned out at all. The
// snippet of last is replaced by its Snippet, as AddAttempt does.
func (s *Store) DeadLetter(ctx context.Context, tenant, id, ep string, last *dispatcherv1.Attempt, reason string, at time.Time) error {
	v, err := encodeDeadLetter(id, ep, last, reason, at)
	if err != nil {
		return err
	}
	err = s.batch.Do(ctx, s.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		s.pushDeadLetter(ctx, pipe, tenant, id, ep, v, at)
	})
	if err != nil {
		return fmt.Errorf("record dead letter: %w", err)
	}
	return nil
}

func encodeDeadLetter(id, ep string, last *dispatcherv1.Attempt, reason string, at time.Time) ([]byte, error) {
	if last != nil {
		last.ResponseSnippet = Snippet(last.ResponseSnippet)
	}
	dl := &dispatcherv1.DeadLetter{MessageId: id, EndpointId: ep, Time: timestamppb.New(at), LastAttempt: last, Reason: strings.ToValidUTF8(reason, "\uFFFD")}
	v, err := protojson.Marshal(dl)
	if err != nil {
		return nil, fmt.Errorf("encode dead letter: %w", err)
	}
	return v, nil
}

// pushDeadLetter queues the writes of a dead letter encoded as v.
func (s *Store) pushDeadLetter(ctx context.Context, pipe redis.Pipeliner, tenant, id, ep string, v []byte, at time.Time) {
	score := float64(at.UnixMilli())
	cut := strconv.FormatInt(at.Add(-s.retention).UnixMilli(), 10)
	setFieldScript.EvalSha(ctx, pipe, []string{s.msgKey(tenant, id)}, "dl:"+ep, v)
	for _, k := range []string{s.dlKey(tenant), s.dleKey(tenant, ep)} {
		member := id
		if k == s.dlKey(tenant) {
			member = id + " " + ep
		}
		pipe.ZAdd(ctx, k, redis.Z{Score: score, Member: member})
		pipe.ZRemRangeByScore(ctx, k, "-inf", "("+cut)
		pipe.Expire(ctx, k, s.retention)
	}
}

// DeadLetters pages through dead letters, newest first, optionally of one
// endpoint only.
func (s *Store) DeadLetters(ctx context.Context, tenant, ep string, size int, token string) ([]*dispatcherv1.DeadLetter, string, error) {
	off, err := decodeOffset(token)
	if err != nil {
		return nil, "", err
	}
	key := s.dlKey(tenant)
	if ep != "" {
		key = s.dleKey(tenant, ep)
	}
	members, err := s.rdb.ZRevRange(ctx, key, int64(off), int64(off+size)).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list dead letters: %w", err)
	}
	next := ""
	if len(members) > size {
		members = members[:size]
		next = encodeOffset(off + size)
	}
	cmds := make([]*redis.StringCmd, len(members))
	pipe := s.rdb.Pipeline()
	for i, m := range members {
		id, e := m, ep
		if ep == "" {
			// Endpoint ids have no spaces; event ids may.
			if j := strings.LastIndexByte(m, ' '); j >= 0 {
				id, e = m[:j], m[j+1:]
			}
		}
		cmds[i] = pipe.HGet(ctx, s.msgKey(tenant, id), "dl:"+e)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", fmt.Errorf("read dead letters: %w", err)
	}
	out := make([]*dispatcherv1.DeadLetter, 0, len(members))
	for _, c := range cmds {
		if c.Err() != nil {
			continue // message expired or resent since
		}
		dl := &dispatcherv1.DeadLetter{}
		if err := protojson.Unmarshal([]byte(c.Val()), dl); err == nil {
			out = append(out, dl)
		}
	}
	return out, next, nil
}

// clearScript removes the dead letter and the held entry of (id, ep)
// recorded before ARGV[3] (unix ms), leaving newer ones alone.
var clearScript = redis.NewScript(`
local before = tonumber(ARGV[3])
local s = redis.call('ZSCORE', KEYS[3], ARGV[1])
if s and tonumber(s) < before then
  redis.call('HDEL', KEYS[1], 'dl:' .. ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
local h = redis.call('ZSCORE', KEYS[4], ARGV[1])
if h and tonumber(h) < before then redis.call('ZREM', KEYS[4], ARGV[1]) end
return 0
`)

// ClearDeadLetter forgets the dead letter and held entry of a delivery
// that was recorded before the given time, once the delivery has been
// queued again. A resend clears only after its task is confirmed, so a
// failed resend leaves the entry to be recovered later; the time keeps a
// dead letter that the resent task itself produced in the meantime.
func (s *Store) ClearDeadLetter(ctx context.Context, tenant, id, ep string, before time.Time) error {
	keys := []string{s.msgKey(tenant, id), s.dlKey(tenant), s.dleKey(tenant, ep), s.heldKey(tenant, ep)}
	if err := clearScript.Run(ctx, s.rdb, keys, id, ep, before.UnixMilli()).Err(); err != nil {
		return fmt.Errorf("clear dead letter: %w", err)
	}
	return nil
}

// Hold records that a delivery waits for its endpoint to be re-enabled.
func (s *Store) Hold(ctx context.Context, tenant, id, ep string, at time.Time) error {
	pipe := s.rdb.TxPipeline()
	s.queueHold(ctx, pipe, tenant, id, ep, at)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("hold delivery: %w", err)
	}
	return nil
}

func (s *Store) queueHold(ctx context.Context, pipe redis.Pipeliner, tenant, id, ep string, at time.Time) {
	k := s.heldKey(tenant, ep)
	pipe.ZAdd(ctx, k, redis.Z{Score: float64(at.UnixMilli()), Member: id})
	pipe.ZRemRangeByScore(ctx, k, "-inf", "("+strconv.FormatInt(at.Add(-s.retention).UnixMilli(), 10))
	pipe.Expire(ctx, k, s.retention)
}

// Outcome is what one attempt, or a decision taken without one, leaves
// behind for a delivery.
type Outcome struct {
	// Attempt is appended to the attempt log unless nil.
	Attempt *dispatcherv1.Attempt
	// State is the delivery's new state.
	State Delivery
	// DeadLetter, unless empty, records a dead letter with this reason
	// and Attempt as its last attempt.
	DeadLetter string
	// Held adds the message to the endpoint's held set.
	Held bool
	At   time.Time
}

// Op is a write of another store that Settle sends in its transaction.
type Op func(ctx context.Context, pipe redis.Pipeliner)

// Settle records o, and runs ops, in one round trip: one MULTI/EXEC, so an
// attempt is logged if and only if the delivery state it led to is. Done
// as separate writes, a failure in between left an attempt whose delivery
// still showed pending, or a dead letter with no failed state. (In Redis
// Cluster the transaction is per slot; a message's keys share one.)
//
// Attempts settling at the same time share the round trip (redisbatch):
// each one's writes stay whole inside the shared transaction.
func (s *Store) Settle(ctx context.Context, tenant, id, ep string, o Outcome, ops ...Op) error {
	// Encoding errors belong to this attempt alone: found before it
	// joins a batch.
	var att, dl []byte
	var err error
	if o.Attempt != nil {
		if att, err = s.encodeAttempt(o.Attempt); err != nil {
			return err
		}
	}
	if o.DeadLetter != "" {
		if dl, err = encodeDeadLetter(id, ep, o.Attempt, o.DeadLetter, o.At); err != nil {
			return err
		}
	}
	queue := func(ctx context.Context, pipe redis.Pipeliner) {
		for _, op := range ops {
			op(ctx, pipe)
		}
		if att != nil {
			// The state with the attempt: one script, not two.
			s.pushAttemptState(ctx, pipe, tenant, id, o.Attempt, att, ep, o.State)
		}
		if dl != nil {
			s.pushDeadLetter(ctx, pipe, tenant, id, ep, dl, o.At)
		}
		if o.Held {
			s.queueHold(ctx, pipe, tenant, id, ep, o.At)
		}
		if att == nil {
			s.queueDelivery(ctx, pipe, tenant, id, ep, o.State)
		}
	}
	if err := s.batch.Do(ctx, s.rdb, queue); err != nil {
		return fmt.Errorf("record attempt outcome: %w", err)
	}
	return nil
}

// Held returns the ids of messages held for ep.
func (s *Store) Held(ctx context.Context, tenant, ep string) ([]string, error) {
	ids, err := s.rdb.ZRange(ctx, s.heldKey(tenant, ep), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list held deliveries: %w", err)
	}
	return ids, nil
}

// HeldCounts returns how many messages are held for each of eps, in one
// round trip.
func (s *Store) HeldCounts(ctx context.Context, tenant string, eps []string) ([]int64, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(eps))
	for i, ep := range eps {
		cmds[i] = pipe.ZCard(ctx, s.heldKey(tenant, ep))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("count held deliveries: %w", err)
	}
	out := make([]int64, len(eps))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// unholdScript removes a message from a held set and, if it was there
// and the message still exists, sets its delivery state.
var unholdScript = redis.NewScript(`
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
return 1
`)

// Unhold removes id from ep's held set and reports whether it was there:
// whoever removes it owns sending it. If it was, the delivery's state
// becomes d, in the same step.
func (s *Store) Unhold(ctx context.Context, tenant, id, ep string, d Delivery) (bool, error) {
	v := encodeDelivery(d)
	n, err := unholdScript.Run(ctx, s.rdb, []string{s.msgKey(tenant, id), s.heldKey(tenant, ep)}, id, "d:"+ep, v).Int()
	if err != nil {
		return false, fmt.Errorf("release held delivery: %w", err)
	}
	return n == 1, nil
}

// Recoverable returns the ids of messages held or dead-lettered for ep
// since the given time.
func (s *Store) Recoverable(ctx context.Context, tenant, ep string, since time.Time) ([]string, error) {
	min := strconv.FormatInt(since.UnixMilli(), 10)
	seen := map[string]bool{}
	var out []string
	for _, k := range []string{s.heldKey(tenant, ep), s.dleKey(tenant, ep)} {
		ids, err := s.rdb.ZRangeByScore(ctx, k, &redis.ZRangeBy{Min: min, Max: "+inf"}).Result()
		if err != nil {
			return nil, fmt.Errorf("list recoverable deliveries: %w", err)
		}
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out, nil
}

func encodeOffset(n int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("o" + strconv.Itoa(n)))
}

func decodeOffset(token string) (int, error) {
	if token == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 2 || b[0] != 'o' {
		return 0, ErrBadToken
	}
	n, err := strconv.Atoi(string(b[1:]))
	if err != nil || n < 0 {
		return 0, ErrBadToken
	}
	return n, nil
}
