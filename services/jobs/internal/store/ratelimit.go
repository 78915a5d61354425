package store

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// RateLimit caps how often attempts of one task name start, for one
// tenant: Burst at once, then PerSecond. It is enforced by the lease
// script, so every replica and worker shares it.
//
// The tenant's limits live in one hash, {p}:rl:<tenant>, with three fields
// per limited name: c:<name> the setting ("perSecond burst"), t:<name> the
// theoretical arrival time of the generic cell rate algorithm (when the
// next start is due if starts came at the full rate) and r:<name> the end
// of the line of tasks deferred to a turn of their own. A deferred task
// waits in the schedule, not in a worker or the broker, and a new task
// queues behind the deferred ones rather than taking their turns.
type RateLimit struct {
	Name      string
	PerSecond float64
	Burst     int
}

// Limits of a RateLimit, and of how many one tenant may have.
const (
	MaxRatePerSecond = 100000
	MaxRateBurst     = 10000
	MaxRateLimits    = 1000
)

// ErrTooManyRateLimits is returned by SetRateLimit for a new name once
// the tenant has MaxRateLimits.
var ErrTooManyRateLimits = fmt.Errorf("a tenant may set at most %d rate limits", MaxRateLimits)

func (s *Store) rl(tenant string) string { return s.Key("rl", tenant) }

// SetRateLimit creates or replaces the limit of l.Name. The algorithm's
// state is kept, so a change applies from the next start on.
func (s *Store) SetRateLimit(ctx context.Context, tenant string, l RateLimit) error {
	if !(l.PerSecond > 0 && l.PerSecond <= MaxRatePerSecond) || l.Burst < 1 || l.Burst > MaxRateBurst {
		return fmt.Errorf("rate limit %q: perSecond %v burst %d out of range", l.Name, l.PerSecond, l.Burst)
	}
	names, err := s.RateLimits(ctx, tenant)
	if err != nil {
		return err
	}
	if len(names) >= MaxRateLimits && !slices.ContainsFunc(names, func(x RateLimit) bool { return x.Name == l.Name }) {
		return ErrTooManyRateLimits
	}
	v := strconv.FormatFloat(l.PerSecond, 'g', -1, 64) + " " + strconv.Itoa(l.Burst)
	if err := s.rdb.HSet(ctx, s.rl(tenant), "c:"+l.Name, v).Err(); err != nil {
		return fmt.Errorf("set rate limit %q: %w", l.Name, err)
	}
	return nil
}

// DeleteRateLimit removes the limit of name; ErrNotFound if it has none.
// Tasks already deferred keep their turn.
func (s *Store) DeleteRateLimit(ctx context.Context, tenant, name string) error {
	n, err := s.rdb.HDel(ctx, s.rl(tenant), "c:"+name, "t:"+name, "r:"+name).Result()
	if err != nil {
		return fmt.Errorf("delete rate limit %q: %w", name, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// RateLimits lists the tenant's limits by name.
func (s *Store) RateLimits(ctx context.Context, tenant string) ([]RateLimit, error) {
	h, err := s.rdb.HGetAll(ctx, s.rl(tenant)).Result()
	if err != nil {
		return nil, fmt.Errorf("list rate limits: %w", err)
	}
	var out []RateLimit
	for k, v := range h {
		name, ok := strings.CutPrefix(k, "c:")
		if !ok {
			continue
		}
		rate, burst, _ := strings.Cut(v, " ")
		l := RateLimit{Name: name}
		l.PerSecond, _ = strconv.ParseFloat(rate, 64)
		l.Burst, _ = strconv.Atoi(burst)
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
