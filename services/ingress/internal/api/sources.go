// Package api implements the ingress gRPC services: the tenant-scoped
// sources API and internal publishing. Domain errors are mapped to gRPC
// status codes here, at the edge.
package api

import (
	"context"
	"errors"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/services/ingress/internal/source"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Sources implements SourceService.
type Sources struct {
	ingressv1.UnimplementedSourceServiceServer
	Store *source.Store
}

// domain is the ErrorInfo domain of the ingress API's errors.
const domain = "hookyard.ingress.v1"

func storeError(err error, name string) error {
	switch {
	case errors.Is(err, source.ErrNotFound):
		return status.Errorf(codes.NotFound, "source %q not found", name)
	case errors.Is(err, source.ErrExists):
		return status.Errorf(codes.AlreadyExists, "source name %q is taken", name)
	case errors.Is(err, source.ErrBadToken):
		return status.Error(codes.InvalidArgument, "page_token is invalid")
	case errors.Is(err, source.ErrConflict):
		return status.Errorf(codes.Aborted, "source %q: %v", name, err)
	default:
		return server.Unavailable(domain, "the source store", err)
	}
}

// CreateSource creates a source.
func (s *Sources) CreateSource(ctx context.Context, r *ingressv1.CreateSourceRequest) (*ingressv1.Source, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	src := r.GetSource()
	if src == nil {
		return nil, status.Error(codes.InvalidArgument, "source is required")
	}
	src = proto.Clone(src).(*ingressv1.Source)
	src.CreateTime, src.UpdateTime = nil, nil
	if err := source.Validate(src); err != nil {
		return nil, server.BadRequest(domain, err)
	}
	out, err := s.Store.Create(ctx, tenant, src)
	if err != nil {
		return nil, storeError(err, src.GetName())
	}
	return source.Masked(out), nil
}

// GetSource returns a source with masked secrets.
func (s *Sources) GetSource(ctx context.Context, r *ingressv1.GetSourceRequest) (*ingressv1.Source, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !source.ValidName(r.GetName()) {
		return nil, status.Errorf(codes.NotFound, "source %q not found", r.GetName())
	}
	out, err := s.Store.Get(ctx, tenant, r.GetName())
	if err != nil {
		return nil, storeError(err, r.GetName())
	}
	return source.Masked(out), nil
}

// ListSources pages through the tenant's sources.
func (s *Sources) ListSources(ctx context.Context, r *ingressv1.ListSourcesRequest) (*ingressv1.ListSourcesResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	size, err := server.PageSize(r.GetPageSize())
	if err != nil {
		return nil, err
	}
	srcs, next, err := s.Store.List(ctx, tenant, size, r.GetPageToken())
	if err != nil {
		return nil, storeError(err, "")
	}
	resp := &ingressv1.ListSourcesResponse{NextPageToken: next}
	for _, src := range srcs {
		resp.Sources = append(resp.Sources, source.Masked(src))
	}
	return resp, nil
}

// UpdateSource changes the fields in update_mask; with no mask, every field
// set in the request.
func (s *Sources) UpdateSource(ctx context.Context, r *ingressv1.UpdateSourceRequest) (*ingressv1.Source, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	in := r.GetSource()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "source is required")
	}
	if !source.ValidName(in.GetName()) {
		return nil, status.Errorf(codes.NotFound, "source %q not found", in.GetName())
	}
	out, err := s.Store.Modify(ctx, tenant, in.GetName(), func(cur *ingressv1.Source) (*ingressv1.Source, error) {
		merged, err := source.Merge(cur, in, r.GetUpdateMask().GetPaths())
		if err != nil {
			return nil, server.BadRequest(domain, err)
		}
		if err := source.Validate(merged); err != nil {
			return nil, server.BadRequest(domain, err)
		}
		return merged, nil
	})
	if _, ok := status.FromError(err); ok && err != nil {
		return nil, err
	}
	if err != nil {
		return nil, storeError(err, in.GetName())
	}
	return source.Masked(out), nil
}

// DeleteSource removes a source.
func (s *Sources) DeleteSource(ctx context.Context, r *ingressv1.DeleteSourceRequest) (*ingressv1.DeleteSourceResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !source.ValidName(r.GetName()) {
		return nil, status.Errorf(codes.NotFound, "source %q not found", r.GetName())
	}
	if err := s.Store.Delete(ctx, tenant, r.GetName()); err != nil {
		return nil, storeError(err, r.GetName())
	}
	return &ingressv1.DeleteSourceResponse{}, nil
}

// ListSourceStats reports the tenant's webhook counters per source.
func (s *Sources) ListSourceStats(ctx context.Context, _ *ingressv1.ListSourceStatsRequest) (*ingressv1.ListSourceStatsResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	stats, err := s.Store.Stats(ctx, tenant)
	if err != nil {
		return nil, server.Unavailable(domain, "the webhook counters", err)
	}
	return &ingressv1.ListSourceStatsResponse{Stats: stats}, nil
}
