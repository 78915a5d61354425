package admit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Breaker states as the API shows them.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half_open"
)

// breakerKey is the hash of the endpoint's breakers that are not closed,
// one field per replica: "<state> <until unix ms>". Breakers live in each
// replica's memory; this copy exists so that the API of any replica can
// show them.
func (g *Gate) breakerKey(ep string) string { return g.prefix + ":breaker:{" + ep + "}" }

// BreakerTTL bounds how long a replica's report outlives its last change,
// so that a replica that died with an open breaker stops being shown.
const BreakerTTL = 15 * time.Minute

// ReportBreaker records the breaker state of one replica for endpoint ep;
// a closed breaker removes the replica's entry.
func (g *Gate) ReportBreaker(ctx context.Context, ep, replica, state string, until time.Time) error {
	key := g.breakerKey(ep)
	var err error
	if state == BreakerClosed {
		err = g.rdb.HDel(ctx, key, replica).Err()
	} else {
		_, err = g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, replica, state+" "+strconv.FormatInt(until.UnixMilli(), 10))
			p.PExpire(ctx, key, BreakerTTL)
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("report breaker of endpoint %s: %w", ep, err)
	}
	return nil
}

// Status is the shared admission state of one endpoint.
type Status struct {
	Breaker         string    // closed, open or half_open: the worst replica's
	BreakerUntil    time.Time // while open: the latest probe time
	BreakerReplicas int       // replicas whose breaker is not closed
	InFlight        int       // live leases
	// RateTokens is what the bucket holds now; negative while attempts
	// hold reservations ahead. Zero when rate is 0.
	RateTokens float64
}

// Statuses reads the status of each endpoint in one round trip. rates
// are the endpoints' rate limits (0 = none), in the same order.
func (g *Gate) Statuses(ctx context.Context, eps []string, rates []int) ([]Status, error) {
	now := time.Now()
	ms := now.UnixMilli()
	pipe := g.rdb.Pipeline()
	type cmds struct {
		inflight *redis.IntCmd
		bucket   *redis.SliceCmd
		breakers *redis.MapStringStringCmd
	}
	cs := make([]cmds, len(eps))
	for i, ep := range eps {
		k := g.keys(ep, "")
		cs[i] = cmds{
			inflight: pipe.ZCount(ctx, k[2], "("+strconv.FormatInt(ms, 10), "+inf"),
			bucket:   pipe.HMGet(ctx, k[3], "t", "at"),
			breakers: pipe.HGetAll(ctx, g.breakerKey(ep)),
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("read endpoint status: %w", err)
	}
	out := make([]Status, len(eps))
	for i := range eps {
		s := Status{Breaker: BreakerClosed, InFlight: int(cs[i].inflight.Val())}
		if rate := rates[i]; rate > 0 {
			s.RateTokens = tokens(cs[i].bucket.Val(), float64(rate), ms)
		}
		for _, v := range cs[i].breakers.Val() {
			state, at, _ := strings.Cut(v, " ")
			n, _ := strconv.ParseInt(at, 10, 64)
			until := time.UnixMilli(n)
			// An open breaker whose timeout passed lets the next attempt
			// probe: it is half-open even if no attempt came to say so.
			if state == BreakerOpen && !now.Before(until) {
				state = BreakerHalfOpen
			}
			s.BreakerReplicas++
			switch {
			case state == BreakerOpen:
				s.Breaker = BreakerOpen
				if until.After(s.BreakerUntil) {
					s.BreakerUntil = until
				}
			case s.Breaker == BreakerClosed:
				s.Breaker = BreakerHalfOpen
			}
		}
		out[i] = s
	}
	return out, nil
}

// tokens refills the bucket fields {t, at} as the admit script does.
func tokens(vals []any, rate float64, now int64) float64 {
	t, at := rate, now
	if s, ok := vals[0].(string); ok {
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			t = v
		}
	}
	if s, ok := vals[1].(string); ok {
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			at = v
		}
	}
	if now > at {
		t = min(rate, t+float64(now-at)*rate/1000)
	}
	return t
}
