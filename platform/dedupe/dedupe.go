// Package dedupe remembers which event ids have been published, in Redis, so
// that every replica refuses the same replay.
//
// An id is claimed before publishing and marked done only after the broker
// confirmed the publish. A crash in between leaves a short-lived claim that
// expires, so the provider's retry publishes again: a duplicate may slip
// through, an event is never lost.
package dedupe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/redisbatch"
)

// State is the outcome of a Claim.
type State int

const (
	// Claimed: the caller owns the id and must Confirm or Release it.
	Claimed State = iota
	// Done: the id was already published.
	Done
	// InProgress: another request is publishing the id right now.
	InProgress
)

const doneValue = "done"

// Errors of Do.
var (
	// ErrInProgress means another caller holds the claim on the key right
	// now; its work may still fail, so this is not a success: retry.
	ErrInProgress = errors.New("dedupe: another request is working on this id")
	// ErrStore wraps a Redis failure: nothing was done, retry later.
	ErrStore = errors.New("dedupe: store unavailable")
)

// Store is a Redis-backed id set.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// ClaimTTL bounds how long a crashed publisher blocks retries.
	ClaimTTL time.Duration
	// Log receives the failures Do survives (a confirm or release that
	// did not reach Redis). Nil discards them.
	Log *slog.Logger

	// batch shares round trips between concurrent callers; nil sends
	// each script on its own (a Store not made by New).
	batch *batcher
	// pending counts the claims follow is settling.
	pending sync.WaitGroup
}

// New returns a Store whose keys start with prefix.
func New(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix, ClaimTTL: 30 * time.Second, batch: &batcher{rdb: rdb}}
}

// Redis is the client s uses.
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// run runs a script, in a round trip shared with concurrent callers.
func (s *Store) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	if s.batch == nil {
		return script.Run(ctx, s.rdb, keys, args...)
	}
	return s.batch.run(ctx, script, keys, args...)
}

// Claim is a claim on one id.
type Claim struct {
	key   string
	token string
}

// Key is the Redis key of an id; parts are joined with ':' after escaping
// so that ("a:b","c") and ("a","b:c") never collide.
func (s *Store) Key(parts ...string) string {
	n := len(s.prefix)
	for _, p := range parts {
		n += len(p) + 6
	}
	k := make([]byte, 0, n)
	k = append(k, s.prefix...)
	for _, p := range parts {
		k = append(k, ':')
		k = strconv.AppendInt(k, int64(len(p)), 10)
		k = append(k, '.')
		k = append(k, p...)
	}
	return string(k)
}

// Claim tries to take key for publishing.
func (s *Store) Claim(ctx context.Context, key string) (State, Claim, error) {
	token, err := newToken()
	if err != nil {
		return 0, Claim{}, err
	}
	// One round trip: take the id, or learn who has it.
	return claimResult(key, token, s.run(ctx, claimScript, []string{key}, token, s.ClaimTTL.Milliseconds()))
}

func newToken() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("dedupe token: %w", err)
	}
	return "pending:" + hex.EncodeToString(b[:]), nil
}

func claimResult(key, token string, cmd *redis.Cmd) (State, Claim, error) {
	v, err := cmd.Text()
	switch {
	case err != nil:
		return 0, Claim{}, fmt.Errorf("dedupe claim: %w", err)
	case v == token:
		return Claimed, Claim{key: key, token: token}, nil
	case v == doneValue:
		return Done, Claim{}, nil
	default:
		return InProgress, Claim{}, nil
	}
}

var claimScript = redisbatch.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return ARGV[1]
end
return redis.call('GET', KEYS[1]) or ''`)

// Both scripts act only while the caller's own claim is in place, so a slow
// publisher whose claim expired cannot clobber the next one's.
var confirmScript = redisbatch.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or v == false then
  redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
  return 1
end
return 0`)

var releaseScript = redisbatch.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// Confirm marks the id published, remembered for ttl.
func (s *Store) Confirm(ctx context.Context, c Claim, ttl time.Duration) error {
	if err := s.run(ctx, confirmScript, []string{c.key}, c.token, ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("dedupe confirm: %w", err)
	}
	return nil
}

// Release gives the id back after a failed publish so a retry can proceed.
func (s *Store) Release(ctx context.Context, c Claim) error {
	if err := s.run(ctx, releaseScript, []string{c.key}, c.token).Err(); err != nil {
		return fmt.Errorf("dedupe release: %w", err)
	}
	return nil
}

var bindScript = redisbatch.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0`)

// Bind ties key to value for ttl: the first caller binds it, and later
// callers succeed only with the same value. It reports whether value is
// the bound one.
func (s *Store) Bind(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	return bindResult(s.run(ctx, bindScript, []string{key}, value, max(ttl.Milliseconds(), 1)))
}

func bindResult(cmd *redis.Cmd) (bool, error) {
	n, err := cmd.Int()
	if err != nil {
		return false, fmt.Errorf("dedupe bind: %w", err)
	}
	return n == 1, nil
}

// Binding is a Bind that Do makes in the same round trip as its claim.
type Binding struct {
	Key, Value string
	TTL        time.Duration
}

// ErrBound means a Binding of Do found its key bound to another value.
var ErrBound = errors.New("dedupe: key bound to another value")

// Check is a read Do makes in the claim's round trip, for a condition
// the work depends on: Allow gets the value of Key (found false: no such
// key) and returns nil to let the work go ahead, or the error Do returns
// without running fn. It saves the caller a round trip of its own before
// the claim (the publisher's check of a source's owner).
type Check struct {
	Key   string
	Allow func(value string, found bool) error
}

var readScript = redisbatch.NewScript(`return redis.call('GET', KEYS[1])`)

// checkResult is Allow's verdict on a read, or the read's error.
func checkResult(c Check, cmd *redis.Cmd) error {
	v, err := cmd.Text()
	switch {
	case errors.Is(err, redis.Nil):
		return c.Allow("", false)
	case err != nil:
		return fmt.Errorf("%w: read %s: %w", ErrStore, c.Key, err)
	}
	return c.Allow(v, true)
}

// claimAndBind reads checks, claims key and makes binds in one round
// trip. If a check or a bind refuses or fails, a claim it made is given
// back and the error returned; a check's error comes first.
func (s *Store) claimAndBind(ctx context.Context, key string, checks []Check, binds []Binding) (State, Claim, error) {
	if (len(binds) == 0 && len(checks) == 0) || s.batch == nil {
		for _, c := range checks {
			if err := checkResult(c, readScript.Run(ctx, s.rdb, []string{c.Key})); err != nil {
				return 0, Claim{}, err
			}
		}
		for _, b := range binds {
			ok, err := s.Bind(ctx, b.Key, b.Value, b.TTL)
			if err != nil {
				return 0, Claim{}, fmt.Errorf("%w: %w", ErrStore, err)
			}
			if !ok {
				return 0, Claim{}, ErrBound
			}
		}
		state, claim, err := s.Claim(ctx, key)
		if err != nil {
			return 0, Claim{}, fmt.Errorf("%w: %w", ErrStore, err)
		}
		return state, claim, nil
	}
	token, err := newToken()
	if err != nil {
		return 0, Claim{}, fmt.Errorf("%w: %w", ErrStore, err)
	}
	calls := make([]*call, 0, len(checks)+len(binds)+1)
	for _, c := range checks {
		calls = append(calls, &call{script: readScript, keys: []string{c.Key}})
	}
	for _, b := range binds {
		calls = append(calls, &call{script: bindScript, keys: []string{b.Key}, args: []any{b.Value, max(b.TTL.Milliseconds(), 1)}})
	}
	calls = append(calls, &call{script: claimScript, keys: []string{key}, args: []any{token, s.ClaimTTL.Milliseconds()}})
	cmds := s.batch.runAll(ctx, calls...)
	state, claim, cerr := claimResult(key, token, cmds[len(cmds)-1])
	var berr error
	for i, c := range checks {
		if berr = checkResult(c, cmds[i]); berr != nil {
			break
		}
	}
	for _, cmd := range cmds[len(checks) : len(cmds)-1] {
		if berr != nil {
			break
		}
		ok, err := bindResult(cmd)
		if err != nil {
			berr = fmt.Errorf("%w: %w", ErrStore, err)
			break
		}
		if !ok {
			berr = ErrBound
			break
		}
	}
	switch {
	case cerr != nil && berr == nil:
		return 0, Claim{}, fmt.Errorf("%w: %w", ErrStore, cerr)
	case berr != nil:
		if cerr == nil && state == Claimed {
			s.releaseAsync(key, claim)
		}
		return 0, Claim{}, berr
	}
	return state, claim, nil
}

// releaseAsync gives a claim back without waiting for Redis; a later
// claim through this Store is queued after it.
func (s *Store) releaseAsync(key string, c Claim) {
	s.batch.send(releaseScript, []string{c.key}, func(cmd *redis.Cmd) {
		if err := cmd.Err(); err != nil {
			s.logger().Warn("dedupe release failed; the claim expires by itself", "key", key, "err", err)
		}
	}, c.token)
}

// Do runs fn once per key: it claims key, runs fn, and then remembers key
// for ttl if fn succeeded or gives the claim back if it failed, so that a
// retry runs fn again. It returns Done without running fn if key was done
// before, and ErrInProgress if another caller holds the claim.
//
// The claim carries a fencing token: a caller whose claim expired while fn
// ran (a stalled publisher) can neither release nor overwrite the claim of
// the caller that took over. Once fn succeeded, Do succeeds even if
// remembering key fails: the work is done, and a retry may do it again,
// which callers must tolerate (at-least-once).
//
// binds are made in the claim's round trip (see Bind): if one is refused,
// Do returns ErrBound without running fn. Once fn succeeded, Do queues the
// confirm and returns without waiting for it: scripts run in the order
// they are queued, so any later claim of key through this Store finds it
// done, and a failed confirm could only be logged anyway.
//
// fn's error is returned as is; Redis failures before fn ran wrap ErrStore.
func (s *Store) Do(ctx context.Context, key string, ttl time.Duration, fn func(context.Context) error, binds ...Binding) (State, error) {
	return s.DoChecked(ctx, key, ttl, nil, fn, binds...)
}

// DoChecked is Do that first reads checks in the claim's round trip: if
// one's Allow refuses, DoChecked returns its error without running fn,
// whatever the claim found (a claim it made is given back).
func (s *Store) DoChecked(ctx context.Context, key string, ttl time.Duration, checks []Check, fn func(context.Context) error, binds ...Binding) (State, error) {
	state, claim, err := s.claimAndBind(ctx, key, checks, binds)
	if err != nil {
		return 0, err
	}
	switch state {
	case Done:
		return Done, nil
	case InProgress:
		return InProgress, ErrInProgress
	}
	if err := fn(ctx); err != nil {
		var pending *Pending
		if errors.As(err, &pending) && pending.Wait != nil {
			s.follow(key, claim, ttl, pending)
			return Claimed, err
		}
		if rerr := s.Release(context.WithoutCancel(ctx), claim); rerr != nil {
			s.logger().Warn("dedupe release failed; the claim expires by itself", "key", key, "err", rerr)
		}
		return Claimed, err
	}
	if s.batch == nil {
		if err := s.Confirm(context.WithoutCancel(ctx), claim, ttl); err != nil {
			s.logger().Warn("dedupe confirm failed; a retry may repeat the work", "key", key, "err", err)
		}
		return Claimed, nil
	}
	s.batch.send(confirmScript, []string{claim.key}, func(cmd *redis.Cmd) {
		if err := cmd.Err(); err != nil {
			s.logger().Warn("dedupe confirm failed; a retry may repeat the work", "key", key, "err", err)
		}
	}, claim.token, ttl.Milliseconds())
	return Claimed, nil
}

// Pending is an error fn may return to Do when its work may still succeed
// (a publish the broker has not answered yet): Err is what Do returns now,
// and Wait blocks until the outcome is known, nil meaning the work was
// done. Do keeps the claim meanwhile, so a retry is told the id is in
// progress rather than doing the work a second time, and then remembers
// the key or gives the claim back as Wait reports. A Wait that outlasts
// the claim (ClaimTTL) is given up; the claim then expires by itself.
type Pending struct {
	Err  error
	Wait func(context.Context) error
}

func (p *Pending) Error() string { return p.Err.Error() }
func (p *Pending) Unwrap() error { return p.Err }

// follow settles a claim whose work is pending, in the background.
func (s *Store) follow(key string, c Claim, ttl time.Duration, p *Pending) {
	s.pending.Add(1)
	go func() {
		defer s.pending.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.ClaimTTL)
		defer cancel()
		err := p.Wait(ctx)
		switch {
		case err == nil:
			if cerr := s.Confirm(context.Background(), c, ttl); cerr != nil {
				s.logger().Warn("dedupe confirm failed; a retry may repeat the work", "key", key, "err", cerr)
			}
		case ctx.Err() != nil:
			s.logger().Warn("no outcome while the claim lasted; it expires by itself", "key", key, "err", err)
		default:
			if rerr := s.Release(context.Background(), c); rerr != nil {
				s.logger().Warn("dedupe release failed; the claim expires by itself", "key", key, "err", rerr)
			}
		}
	}()
}

// Flush waits until the pending work Do follows is settled and the
// confirms and releases Do queued without waiting have reached Redis, or
// ctx ends. A service calls it when it stops, after
// its last request: an id whose confirm was lost stays claimed until
// ClaimTTL, and a replay would be published again after that.
func (s *Store) Flush(ctx context.Context) error {
	settled := make(chan struct{})
	go func() { s.pending.Wait(); close(settled) }()
	select {
	case <-settled:
	case <-ctx.Done():
		return fmt.Errorf("dedupe flush: waiting for pending work: %w", ctx.Err())
	}
	if s.batch == nil {
		return nil
	}
	if err := s.batch.flushed(ctx); err != nil {
		return fmt.Errorf("dedupe flush: %w", err)
	}
	return nil
}

func (s *Store) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}
