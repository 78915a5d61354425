// Package endpoint keeps a tenant's subscriber endpoints in Redis and
// answers the question every event raises: which endpoints want it.
//
// Layout (P is the configured key prefix):
//
//	P:ep:{tenant}:<id>   hash: data (protojson Endpoint, no secret),
//	                     secrets (JSON), failing_since (unix ms), failures
//	                     (failed attempts in the run), notice
//	                     (reason of a disabled event still to publish),
//	                     kind ("callback" for a hidden callback endpoint)
//	P:eps:{tenant}       sorted set of ids, all score 0; uuid v7 ids sort
//	                     lexicographically in creation order, so ZRANGEBYLEX
//	                     pages oldest first with the last id as page token
//
// Reads for delivery go through a per-replica cache that is at most
// CacheTTL old, so a change made on any replica reaches all of them within
// that time without a pub/sub channel to keep alive.
package endpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/redisbatch"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/platform/topic"
)

// Errors returned by Store.
var (
	ErrNotFound = errors.New("endpoint not found")
	ErrBadToken = errors.New("invalid page token")
	ErrConflict = errors.New("endpoint changed concurrently, try again")
)

// CacheTTL bounds how stale a replica's view of endpoints may be.
const CacheTTL = time.Second

// Reasons an endpoint is disabled.
const (
	ReasonGone    = "gone"
	ReasonFailing = "failing"
	ReasonManual  = "manual"
)

// Secret is one signing secret; Expires is zero while it is current.
type Secret struct {
	Value   string    `json:"value"`
	Expires time.Time `json:"expires,omitzero"`
}

// Record is an endpoint with its active secrets, as the delivery path needs it.
type Record struct {
	Tenant   string
	Endpoint *dispatcherv1.Endpoint // Secret is always empty
	Secrets  []Secret               // newest first, expired ones dropped
	// Notice is the reason of a disabling whose hookyard.endpoint.disabled
	// event is not published yet. It is saved with the disabling, so an
	// event that failed to publish (or a crash) is retried, not lost.
	Notice string
	// Callback marks a hidden endpoint made for one-off deliveries
	// (PutCallback): not listed, never matched by events, not visible to
	// the endpoint API, never disabled.
	Callback bool
	// Failures counts the failed attempts of the run that started at
	// Endpoint.FailingSince.
	Failures int

	prepared atomic.Pointer[preparedKeys] // see SigningKeys
}

// SigningKeys returns the prepared keys of the secrets active at now. They
// are prepared once per record (the delivery path reads cached records):
// decoding a secret and deriving its HMAC key schedule on every attempt
// cost more than signing.
func (r *Record) SigningKeys(now time.Time) []*sign.Key {
	p := r.prepared.Load()
	if p == nil || !slices.Equal(p.secrets, r.Secrets) {
		p = prepareKeys(r.Secrets)
		r.prepared.Store(p)
	}
	if !p.expiring {
		return p.active
	}
	var keys []*sign.Key
	for i, s := range p.secrets {
		if k := p.keys[i]; k != nil && (s.Expires.IsZero() || now.Before(s.Expires)) {
			keys = append(keys, k)
		}
	}
	return keys
}

// preparedKeys are the keys of secrets, nil for one that does not parse;
// active lists them all when none expires (expiring false).
type preparedKeys struct {
	secrets  []Secret
	keys     []*sign.Key
	active   []*sign.Key
	expiring bool
}

func prepareKeys(secrets []Secret) *preparedKeys {
	p := &preparedKeys{secrets: slices.Clone(secrets), keys: make([]*sign.Key, len(secrets))}
	for i, s := range secrets {
		if k, err := sign.ParseSecret(s.Value); err == nil {
			p.keys[i] = sign.NewKey(k)
			p.active = append(p.active, p.keys[i])
		}
		p.expiring = p.expiring || !s.Expires.IsZero()
	}
	return p
}

// Store is the Redis-backed endpoint store.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	now    func() time.Time

	// cache maps a tenant to its endpoints for CacheTTL. When full it
	// drops the tenants used least recently.
	cache *expirable.LRU[string, []*Record]
	// loads makes the callers that find a tenant's copy expired share one
	// read: at every expiry each worker and fan-out slot used to read
	// and decode all of the tenant's endpoints itself. gen counts local
	// writes, so that a read started before one is neither joined nor
	// cached after it.
	loads singleflight.Group
	gen   atomic.Uint64
}

// cacheSize bounds how many tenants' endpoints a replica caches.
const cacheSize = 10_000

// New returns a Store writing keys under prefix.
func New(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix, now: time.Now, cache: expirable.NewLRU[string, []*Record](cacheSize, nil, CacheTTL)}
}

func (s *Store) key(tenant, id string) string {
	return s.prefix + ":ep:{" + tenant + "}:" + id // one allocation; Sprintf made four
}
func (s *Store) index(tenant string) string { return fmt.Sprintf("%s:eps:{%s}", s.prefix, tenant) }

func (s *Store) forget(tenant string) {
	s.gen.Add(1)
	s.cache.Remove(tenant)
}

// Create stores a new endpoint and returns it with its secret (the only time
// the secret is shown). ep must have been validated.
func (s *Store) Create(ctx context.Context, tenant string, ep *dispatcherv1.Endpoint) (*dispatcherv1.Endpoint, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("endpoint id: %w", err)
	}
	secret, err := sign.NewSecret()
	if err != nil {
		return nil, err
	}
	ep = proto.Clone(ep).(*dispatcherv1.Endpoint)
	now := timestamppb.New(s.now())
	ep.Id, ep.Secret, ep.CreateTime, ep.UpdateTime, ep.FailingSince, ep.Health = id.String(), "", now, now, nil, nil
	if ep.Disabled {
		ep.DisabledReason = ReasonManual
	} else {
		ep.DisabledReason = ""
	}
	data, err := protojson.Marshal(ep)
	if err != nil {
		return nil, fmt.Errorf("encode endpoint: %w", err)
	}
	secrets, _ := json.Marshal([]Secret{{Value: secret}})
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.key(tenant, ep.Id), "data", data, "secrets", secrets)
		p.ZAdd(ctx, s.index(tenant), redis.Z{Member: ep.Id})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store endpoint: %w", err)
	}
	s.forget(tenant)
	ep.Secret = secret
	return ep, nil
}

// Get reads an endpoint from Redis (never from the cache).
func (s *Store) Get(ctx context.Context, tenant, id string) (*Record, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, ErrNotFound
	}
	vals, err := s.rdb.HGetAll(ctx, s.key(tenant, id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read endpoint: %w", err)
	}
	if len(vals) == 0 {
		return nil, ErrNotFound
	}
	return s.decode(tenant, vals)
}

func (s *Store) decode(tenant string, vals map[string]string) (*Record, error) {
	ep := &dispatcherv1.Endpoint{}
	if err := protojson.Unmarshal([]byte(vals["data"]), ep); err != nil {
		return nil, fmt.Errorf("decode endpoint: %w", err)
	}
	if v := vals["failing_since"]; v != "" {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
			ep.FailingSince = timestamppb.New(time.UnixMilli(ms))
		}
	}
	var secrets []Secret
	if err := json.Unmarshal([]byte(vals["secrets"]), &secrets); err != nil {
		return nil, fmt.Errorf("decode endpoint secrets: %w", err)
	}
	now := s.now()
	live := secrets[:0]
	for _, sec := range secrets {
		if sec.Expires.IsZero() || now.Before(sec.Expires) {
			live = append(live, sec)
		}
	}
	failures, _ := strconv.Atoi(vals["failures"])
	return &Record{Tenant: tenant, Endpoint: ep, Secrets: live, Notice: vals["notice"], Callback: vals["kind"] == kindCallback, Failures: failures}, nil
}

// Cached returns the endpoint from the replica cache, reading the tenant's
// endpoints again when the cache is older than CacheTTL.
func (s *Store) Cached(ctx context.Context, tenant, id string) (*Record, error) {
	all, err := s.all(ctx, tenant)
	if err != nil {
		return nil, err
	}
	for _, r := range all {
		if r.Endpoint.GetId() == id {
			return r, nil
		}
	}
	return nil, ErrNotFound
}

// Matching returns the tenant's enabled endpoints whose event_types match
// routingKey, from the replica cache.
func (s *Store) Matching(ctx context.Context, tenant, routingKey string) ([]*Record, error) {
	all, err := s.all(ctx, tenant)
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, r := range all {
		if topic.MatchAny(r.Endpoint.GetEventTypes(), routingKey) {
			out = append(out, r)
		}
	}
	return out, nil
}

// all returns every endpoint of tenant, at most CacheTTL stale.
func (s *Store) all(ctx context.Context, tenant string) ([]*Record, error) {
	if records, ok := s.cache.Get(tenant); ok {
		return records, nil
	}
	gen := s.gen.Load()
	v, err, _ := s.loads.Do(strconv.FormatUint(gen, 10)+"/"+tenant, func() (any, error) {
		// Not cancelled by the first caller leaving: the others wait on it.
		ctx := context.WithoutCancel(ctx)
		ids, err := s.rdb.ZRange(ctx, s.index(tenant), 0, -1).Result()
		if err != nil {
			return nil, fmt.Errorf("list endpoints: %w", err)
		}
		records, err := s.load(ctx, tenant, ids)
		if err != nil {
			return nil, err
		}
		if s.gen.Load() == gen {
			s.cache.Add(tenant, records)
		}
		return records, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]*Record), nil
}

func (s *Store) load(ctx context.Context, tenant string, ids []string) ([]*Record, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.key(tenant, id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read endpoints: %w", err)
	}
	out := make([]*Record, 0, len(ids))
	for _, c := range cmds {
		if len(c.Val()) == 0 {
			continue // deleted between the index read and now
		}
		r, err := s.decode(tenant, c.Val())
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// List pages through the tenant's endpoints, oldest first.
func (s *Store) List(ctx context.Context, tenant string, size int, token string) ([]*Record, string, error) {
	min := "-"
	if token != "" {
		if _, err := uuid.Parse(token); err != nil {
			return nil, "", ErrBadToken
		}
		min = "(" + token
	}
	ids, err := s.rdb.ZRangeByLex(ctx, s.index(tenant), &redis.ZRangeBy{Min: min, Max: "+", Count: int64(size + 1)}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list endpoints: %w", err)
	}
	next := ""
	if len(ids) > size {
		ids = ids[:size]
		next = ids[size-1]
	}
	records, err := s.load(ctx, tenant, ids)
	return records, next, err
}

// Modify applies fn to the stored endpoint under optimistic locking and
// saves the result. fn may change the endpoint and the secrets.
func (s *Store) Modify(ctx context.Context, tenant, id string, fn func(r *Record) error) (*Record, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, ErrNotFound
	}
	key := s.key(tenant, id)
	var out *Record
	for range 10 {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			vals, err := tx.HGetAll(ctx, key).Result()
			if err != nil {
				return fmt.Errorf("read endpoint: %w", err)
			}
			if len(vals) == 0 {
				return ErrNotFound
			}
			r, err := s.decode(tenant, vals)
			if err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
			r.Endpoint.UpdateTime = timestamppb.New(s.now())
			if !r.Endpoint.GetDisabled() {
				r.Notice = "" // re-enabled before the event went out: it is stale
			}
			fs := r.Endpoint.FailingSince
			stored := proto.Clone(r.Endpoint).(*dispatcherv1.Endpoint)
			stored.Secret, stored.FailingSince, stored.Health = "", nil, nil
			data, err := protojson.Marshal(stored)
			if err != nil {
				return fmt.Errorf("encode endpoint: %w", err)
			}
			secrets, _ := json.Marshal(r.Secrets)
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, key, "data", data, "secrets", secrets)
				if fs == nil {
					p.HDel(ctx, key, "failing_since", "failures")
				} else {
					p.HSet(ctx, key, "failing_since", fs.AsTime().UnixMilli())
				}
				if r.Notice == "" {
					p.HDel(ctx, key, "notice")
				} else {
					p.HSet(ctx, key, "notice", r.Notice)
				}
				return nil
			})
			out = r
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.forget(tenant)
		return out, nil
	}
	return nil, ErrConflict
}

// Delete removes an endpoint.
func (s *Store) Delete(ctx context.Context, tenant, id string) error {
	if _, err := uuid.Parse(id); err != nil {
		return ErrNotFound
	}
	var del *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.Del(ctx, s.key(tenant, id))
		p.ZRem(ctx, s.index(tenant), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete endpoint: %w", err)
	}
	s.forget(tenant)
	if del.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

// Rotate adds a new current secret and lets the previous ones expire after
// overlap. It returns the new secret and when the previous one expires.
func (s *Store) Rotate(ctx context.Context, tenant, id string, overlap time.Duration) (string, time.Time, error) {
	secret, err := sign.NewSecret()
	if err != nil {
		return "", time.Time{}, err
	}
	expires := s.now().Add(overlap)
	_, err = s.Modify(ctx, tenant, id, func(r *Record) error {
		for i := range r.Secrets {
			if r.Secrets[i].Expires.IsZero() || r.Secrets[i].Expires.After(expires) {
				r.Secrets[i].Expires = expires
			}
		}
		r.Secrets = append([]Secret{{Value: secret}}, r.Secrets...)
		return nil
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return secret, expires, nil
}

// markFailingScript sets failing_since unless set, counts the failure
// and returns failing_since. It
// leaves a missing endpoint alone: an attempt that fails after its endpoint
// was deleted must not leave behind a hash holding only failing_since,
// which never expired and made Get of the deleted id fail instead of
// answering not found.
var markFailingScript = redisbatch.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSETNX', KEYS[1], 'failing_since', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'failures', 1)
return redis.call('HGET', KEYS[1], 'failing_since')
`)

// MarkFailing records the start of a failure run if none is recorded and
// returns its start (at if the endpoint no longer exists). It is one
// script call, cheap enough for every failed attempt.
func (s *Store) MarkFailing(ctx context.Context, tenant, id string, at time.Time) (time.Time, error) {
	var since func() time.Time
	var b redisbatch.Batcher
	err := b.Do(ctx, s.rdb, func(ctx context.Context, pipe redis.Pipeliner) {
		since = s.QueueMarkFailing(ctx, pipe, tenant, id, at)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("mark endpoint failing: %w", err)
	}
	return since(), nil
}

// QueueMarkFailing adds MarkFailing to pipe; the function it returns
// reads the start of the run once pipe has run (at when it failed). It
// sends the script by digest: pipe must be sent by a redisbatch.Batcher,
// which sends it again in full if Redis has lost it.
func (s *Store) QueueMarkFailing(ctx context.Context, pipe redis.Pipeliner, tenant, id string, at time.Time) func() time.Time {
	cmd := markFailingScript.EvalSha(ctx, pipe, []string{s.key(tenant, id)}, at.UnixMilli())
	return func() time.Time {
		v, err := cmd.Text()
		if err != nil {
			return at
		}
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return at
		}
		return time.UnixMilli(ms)
	}
}

// ClearFailing ends a failure run.
func (s *Store) ClearFailing(ctx context.Context, tenant, id string) error {
	if err := s.rdb.HDel(ctx, s.key(tenant, id), "failing_since", "failures").Err(); err != nil {
		return fmt.Errorf("end failure run: %w", err)
	}
	return nil
}

// QueueClearFailing adds ClearFailing to pipe. The worker
// sends it with every successful attempt's bookkeeping, not only when its
// cached copy of the endpoint shows a run: the copy may be up to CacheTTL
// older than the failure that started one, and a run left behind would
// auto-disable a healthy endpoint at its next failure.
func (s *Store) QueueClearFailing(ctx context.Context, pipe redis.Pipeliner, tenant, id string) {
	pipe.HDel(ctx, s.key(tenant, id), "failing_since", "failures")
}

// Disable disables an enabled endpoint with reason. It reports whether this
// call disabled it, so only one replica publishes the event.
func (s *Store) Disable(ctx context.Context, tenant, id, reason string) (*Record, bool, error) {
	changed := false
	r, err := s.Modify(ctx, tenant, id, func(r *Record) error {
		changed = !r.Endpoint.Disabled
		if changed {
			r.Endpoint.Disabled, r.Endpoint.DisabledReason, r.Notice = true, reason, reason
		}
		return nil
	})
	return r, changed, err
}

// clearNoticeScript removes the notice if it is still the given one.
var clearNoticeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'notice') == ARGV[1] then redis.call('HDEL', KEYS[1], 'notice') end
return 0
`)

// ClearNotice records that the disabled event for reason was published.
func (s *Store) ClearNotice(ctx context.Context, tenant, id, reason string) error {
	if err := clearNoticeScript.Run(ctx, s.rdb, []string{s.key(tenant, id)}, reason).Err(); err != nil {
		return fmt.Errorf("clear endpoint notice: %w", err)
	}
	s.forget(tenant)
	return nil
}

const kindCallback = "callback"

// callbackSpace names the ids of callback endpoints (UUID v5).
var callbackSpace = uuid.MustParse("5b0f3c1e-6a57-4d0e-9a8e-2f1c7d9b4a10")

// CallbackID is the id of the callback endpoint for url and secret: the
// same for every callback to one subscriber with one secret, so that they
// share its concurrency limit, rate and breaker as an endpoint's
// deliveries do.
func CallbackID(url, secret string) string {
	return uuid.NewSHA1(callbackSpace, []byte(url+"\x00"+secret)).String()
}

// PutCallback returns the hidden endpoint that delivers callbacks to url
// signed with secret, creating it if needed, and keeps it for ttl from
// now. It is stored like an endpoint (so the delivery path, attempts, dead
// letters and resends treat it as one) but not in the tenant's index:
// it is neither listed nor matched by events. url must have been
// validated and secret parsed.
func (s *Store) PutCallback(ctx context.Context, tenant, url, secret string, ttl time.Duration) (*Record, error) {
	id := CallbackID(url, secret)
	now := timestamppb.New(s.now())
	ep := &dispatcherv1.Endpoint{Id: id, Url: url, Description: "completion callback", CreateTime: now, UpdateTime: now}
	data, err := protojson.Marshal(ep)
	if err != nil {
		return nil, fmt.Errorf("encode endpoint: %w", err)
	}
	secrets, _ := json.Marshal([]Secret{{Value: secret}})
	key := s.key(tenant, id)
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSetNX(ctx, key, "data", data)
		p.HSetNX(ctx, key, "secrets", secrets)
		p.HSetNX(ctx, key, "kind", kindCallback)
		p.PExpire(ctx, key, ttl)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store callback endpoint: %w", err)
	}
	return &Record{Tenant: tenant, Endpoint: ep, Secrets: []Secret{{Value: secret}}, Callback: true}, nil
}
