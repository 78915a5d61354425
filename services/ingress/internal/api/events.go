package api

import (
	"context"
	"errors"
	"regexp"

	"github.com/google/uuid"
	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/services/ingress/internal/ingest"
	"github.com/hookyard/hookyard/services/ingress/internal/source"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// Events implements EventService: services publishing their own events.
type Events struct {
	ingressv1.UnimplementedEventServiceServer
	Ingest *ingest.Ingester
}

var (
	typeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$`)
	idRE   = regexp.MustCompile(`^[\x21-\x7e]{1,256}$`)
)

const maxPublishBytes = 1 << 20

// Publish puts an event on the bus under source.type, once per id.
func (e *Events) Publish(ctx context.Context, r *ingressv1.PublishRequest) (*ingressv1.PublishResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	src := r.GetSource()
	if src == "" {
		src = "app"
	}
	if !source.ValidName(src) {
		return nil, status.Errorf(codes.InvalidArgument, "source %q: use 1-63 lowercase letters, digits, '-' or '_'", src)
	}
	if !typeRE.MatchString(r.GetType()) {
		return nil, status.Error(codes.InvalidArgument, "type is required: letters, digits and . _ : / - (at most 200), e.g. user.created")
	}
	id := r.GetId()
	if id == "" {
		v, err := uuid.NewV7()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "id: %v", err)
		}
		id = v.String()
	} else if !idRE.MatchString(id) {
		return nil, status.Error(codes.InvalidArgument, "id: 1-256 printable ASCII characters without spaces")
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
	res, err := e.Ingest.Ingest(ctx, ingest.Event{
		Tenant:      tenant,
		Source:      src,
		ID:          id,
		Type:        r.GetType(),
		Subject:     r.GetSubject(),
		ContentType: "application/json",
		Body:        body,
		DedupeTTL:   source.DefaultDedupeWindow,
	})
	switch {
	case errors.Is(err, ingest.ErrInProgress):
		return nil, status.Error(codes.Aborted, "an event with this id is being published; retry")
	case errors.Is(err, ingest.ErrUnavailable):
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	case err != nil:
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return &ingressv1.PublishResponse{Id: id, Duplicate: res.Duplicate, RoutingKey: res.RoutingKey}, nil
}
