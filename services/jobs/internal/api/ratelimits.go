package api

import (
	"context"
	"errors"
	"math"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// SetRateLimit creates or replaces the rate limit of a task name.
func (s *Queues) SetRateLimit(ctx context.Context, r *jobsv1.SetRateLimitRequest) (*jobsv1.RateLimit, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	l := r.GetRateLimit()
	if !nameRe.MatchString(l.GetName()) {
		return nil, invalid("rateLimit.name: %q: a task name, 1 to 200 letters, digits, '.', '_', ':' or '-'", l.GetName())
	}
	rate := l.GetPerSecond()
	if math.IsNaN(rate) || rate <= 0 || rate > store.MaxRatePerSecond {
		return nil, invalid("rateLimit.perSecond: %v, give more than 0 and at most %d", rate, store.MaxRatePerSecond)
	}
	burst := int(l.GetBurst())
	switch {
	case burst == 0:
		burst = 1
	case burst < 0 || burst > store.MaxRateBurst:
		return nil, invalid("rateLimit.burst: %d, give 1 to %d", burst, store.MaxRateBurst)
	}
	if err := s.Store.SetRateLimit(ctx, tenant, store.RateLimit{Name: l.GetName(), PerSecond: rate, Burst: burst}); err != nil {
		return nil, grpcErr(err)
	}
	return &jobsv1.RateLimit{Name: l.GetName(), PerSecond: rate, Burst: int32(burst)}, nil
}

// ListRateLimits lists the tenant's rate limits.
func (s *Queues) ListRateLimits(ctx context.Context, _ *jobsv1.ListRateLimitsRequest) (*jobsv1.ListRateLimitsResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	ls, err := s.Store.RateLimits(ctx, tenant)
	if err != nil {
		return nil, grpcErr(err)
	}
	out := &jobsv1.ListRateLimitsResponse{}
	for _, l := range ls {
		out.RateLimits = append(out.RateLimits, &jobsv1.RateLimit{Name: l.Name, PerSecond: l.PerSecond, Burst: int32(l.Burst)})
	}
	return out, nil
}

// DeleteRateLimit removes the rate limit of a task name.
func (s *Queues) DeleteRateLimit(ctx context.Context, r *jobsv1.DeleteRateLimitRequest) (*jobsv1.DeleteRateLimitResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !nameRe.MatchString(r.GetName()) {
		return nil, status.Error(codes.NotFound, "rate limit not found")
	}
	if err := s.Store.DeleteRateLimit(ctx, tenant, r.GetName()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Error(codes.NotFound, "rate limit not found")
		}
		return nil, grpcErr(err)
	}
	return &jobsv1.DeleteRateLimitResponse{}, nil
}
