package api

import (
	"context"
	"errors"

	"github.com/google/uuid"
	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/services/ingress/internal/ingest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// Events implements EventService: services publishing their own events.
type Events struct {
	ingressv1.UnimplementedEventServiceServer
	Ingest *ingest.Ingester
}

const maxPublishBytes = 1 << 20

// Publish puts an event on the bus under source.type, once per id.
func (e *Events) Publish(ctx context.Context, r *ingressv1.PublishRequest) (*ingressv1.PublishResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	src := r.GetSource()
	if src == "" {
		src = publish.DefaultSource
	}
	id := r.GetId()
	if id == "" {
		v, err := uuid.NewV7()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "id: %v", err)
		}
		id = v.String()
	}
	body := []byte("null")
	if r.GetData() != nil {
		if body, err = protojson.Marshal(r.GetData()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "data: %v", err)
		}
	}
	if len(body) > maxPublishBytes {
		return nil, status.Errorf(codes.InvalidArgument, "data: larger than %d bytes", maxPublishBytes)
	}
	res, err := e.Ingest.IngestInternal(ctx, ingest.Event{
		Tenant:      tenant,
		Source:      src,
		ID:          id,
		Type:        r.GetType(),
		Subject:     r.GetSubject(),
		ContentType: "application/json",
		Body:        body,
	})
	switch {
	case errors.Is(err, ingest.ErrInvalid):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ingest.ErrSourceNotAllowed):
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ingest.ErrInProgress):
		return nil, status.Error(codes.Aborted, "an event with this id is being published; retry")
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	case err != nil:
		return nil, status.Error(codes.Unavailable, "the event bus is unavailable; retry")
	}
	return &ingressv1.PublishResponse{Id: id, Duplicate: res.Duplicate, RoutingKey: res.RoutingKey}, nil
}
