// Package api implements the dispatcher's gRPC services (REST reaches them
// through the gateway). Every call is scoped to the caller's tenant; a
// resource of another tenant is indistinguishable from a missing one.
// Domain errors become gRPC status codes here and nowhere else.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/fanout"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
)

// Limits of the API.
const (
	// defaultRecoverWindow is how far back recover looks without since_time.
	defaultRecoverWindow = 7 * 24 * time.Hour
	maxBody              = 1 << 20
)

// Deps are what the API needs.
type Deps struct {
	Endpoints *endpoint.Store
	Messages  *message.Store
	Gate      *admit.Gate
	Fanout    *fanout.Fanout
	Publisher task.Publisher
	// Events publishes SendMessage's messages (platform/publish), the same
	// way ingress publishes webhooks.
	Events          *publish.Publisher
	Policy          ssrf.Policy
	RotationOverlap time.Duration
	// Retention is how long message ids are remembered.
	Retention time.Duration
	// DefaultMaxInFlight and DefaultTimeout apply to endpoints that set
	// none; endpoints are shown with them.
	DefaultMaxInFlight int
	DefaultTimeout     time.Duration
	Log                *slog.Logger
}

// Endpoints implements EndpointService.
type Endpoints struct {
	dispatcherv1.UnimplementedEndpointServiceServer
	Deps
}

// Messages implements MessageService.
type Messages struct {
	dispatcherv1.UnimplementedMessageServiceServer
	Deps
}

// storeErr maps a store error to a status.
func storeErr(err error, what, id string) error {
	var st interface{ GRPCStatus() *status.Status }
	switch {
	case errors.As(err, &st):
		return err
	case errors.Is(err, endpoint.ErrNotFound), errors.Is(err, message.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s %q not found", what, id)
	case errors.Is(err, endpoint.ErrBadToken), errors.Is(err, message.ErrBadToken):
		return status.Error(codes.InvalidArgument, "page_token is invalid")
	case errors.Is(err, endpoint.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, fanout.ErrNoEndpoint):
		return status.Errorf(codes.NotFound, "message %q has no delivery to that endpoint", id)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	default:
		return server.Unavailable(domain, what, err)
	}
}

// domain is the ErrorInfo domain of the dispatcher's errors.
const domain = "hookyard.dispatcher.v1"

// view is ep as callers see it: without its secret, and with the
// delivery settings it leaves unset shown as the values it is delivered
// with. Stored, they stay unset, so they follow the server's defaults.
func (d Deps) view(ep *dispatcherv1.Endpoint) *dispatcherv1.Endpoint {
	out := endpoint.Public(ep)
	if out.GetMaxInFlight() == 0 && d.DefaultMaxInFlight > 0 {
		out.MaxInFlight = int32(d.DefaultMaxInFlight)
	}
	if out.GetTimeout() == nil && d.DefaultTimeout > 0 {
		out.Timeout = durationpb.New(d.DefaultTimeout)
	}
	return out
}

// validate checks an endpoint as it would be stored. A retry schedule
// longer than the retention would retry a message whose record (body
// aside, which the task carries) has expired: no status, no attempt log,
// no dead letter to recover.
func (s *Endpoints) validate(ep *dispatcherv1.Endpoint) error {
	if err := endpoint.Validate(ep, s.Policy); err != nil {
		return server.BadRequest(domain, err)
	}
	var total time.Duration
	for _, d := range ep.GetRetrySchedule() {
		total += d.AsDuration()
	}
	if s.Retention > 0 && total >= s.Retention {
		return server.BadRequest(domain, fmt.Errorf("retry_schedule: its delays add up to %v, which must be less than the retention period %v", total, s.Retention))
	}
	return nil
}

// CreateEndpoint creates an endpoint and returns its secret once.
func (s *Endpoints) CreateEndpoint(ctx context.Context, r *dispatcherv1.CreateEndpointRequest) (*dispatcherv1.Endpoint, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.validate(r.GetEndpoint()); err != nil {
		return nil, err
	}
	ep, err := s.Endpoints.Create(ctx, tenant, r.GetEndpoint())
	if err != nil {
		return nil, storeErr(err, "endpoint", "")
	}
	secret := ep.GetSecret()
	ep = s.view(ep)
	ep.Secret = secret
	return ep, nil
}

// visible answers endpoint.ErrNotFound for an endpoint the endpoint API
// does not show: a missing one or a hidden callback endpoint.
func (s *Endpoints) visible(ctx context.Context, tenant, id string) error {
	rec, err := s.Endpoints.Get(ctx, tenant, id)
	if err == nil && rec.Callback {
		err = endpoint.ErrNotFound
	}
	return err
}

// GetEndpoint returns an endpoint without its secret.
func (s *Endpoints) GetEndpoint(ctx context.Context, r *dispatcherv1.GetEndpointRequest) (*dispatcherv1.Endpoint, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	rec, err := s.Endpoints.Get(ctx, tenant, r.GetId())
	if err == nil && rec.Callback {
		err = endpoint.ErrNotFound
	}
	if err != nil {
		return nil, storeErr(err, "endpoint", r.GetId())
	}
	out, err := s.withHealth(ctx, tenant, []*endpoint.Record{rec})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// withHealth returns the records as views with their health.
func (s *Endpoints) withHealth(ctx context.Context, tenant string, recs []*endpoint.Record) ([]*dispatcherv1.Endpoint, error) {
	ids, rates := make([]string, len(recs)), make([]int, len(recs))
	for i, rec := range recs {
		ids[i], rates[i] = rec.Endpoint.GetId(), int(rec.Endpoint.GetRateLimit())
	}
	sts, err := s.Gate.Statuses(ctx, ids, rates)
	if err != nil {
		return nil, storeErr(err, "endpoint status", "")
	}
	held, err := s.Messages.HeldCounts(ctx, tenant, ids)
	if err != nil {
		return nil, storeErr(err, "endpoint status", "")
	}
	out := make([]*dispatcherv1.Endpoint, len(recs))
	for i, rec := range recs {
		st := sts[i]
		h := &dispatcherv1.EndpointHealth{
			BreakerState: st.Breaker, BreakerReplicas: int32(st.BreakerReplicas),
			FailureCount: int32(rec.Failures), InFlight: int32(st.InFlight),
			RateTokens: st.RateTokens, HeldCount: held[i],
		}
		if !st.BreakerUntil.IsZero() {
			h.BreakerUntil = timestamppb.New(st.BreakerUntil)
		}
		out[i] = s.view(rec.Endpoint)
		out[i].Health = h
	}
	return out, nil
}

// ListEndpoints pages through the tenant's endpoints.
func (s *Endpoints) ListEndpoints(ctx context.Context, r *dispatcherv1.ListEndpointsRequest) (*dispatcherv1.ListEndpointsResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	size, err := server.PageSize(r.GetPageSize())
	if err != nil {
		return nil, err
	}
	recs, next, err := s.Endpoints.List(ctx, tenant, size, r.GetPageToken())
	if err != nil {
		return nil, storeErr(err, "endpoints", "")
	}
	eps, err := s.withHealth(ctx, tenant, recs)
	if err != nil {
		return nil, err
	}
	return &dispatcherv1.ListEndpointsResponse{Endpoints: eps, NextPageToken: next}, nil
}

// UpdateEndpoint changes the fields named in the mask.
func (s *Endpoints) UpdateEndpoint(ctx context.Context, r *dispatcherv1.UpdateEndpointRequest) (*dispatcherv1.Endpoint, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if r.GetEndpoint() == nil {
		return nil, status.Error(codes.InvalidArgument, "endpoint is required")
	}
	id := r.GetEndpoint().GetId()
	reenabled := false
	rec, err := s.Endpoints.Modify(ctx, tenant, id, func(rec *endpoint.Record) error {
		if rec.Callback {
			return endpoint.ErrNotFound
		}
		wasDisabled := rec.Endpoint.GetDisabled()
		next := proto.Clone(rec.Endpoint).(*dispatcherv1.Endpoint)
		if err := endpoint.ApplyUpdate(next, r.GetEndpoint(), r.GetUpdateMask()); err != nil {
			return server.BadRequest(domain, err)
		}
		if err := s.validate(next); err != nil {
			return err
		}
		switch {
		case next.GetDisabled() && !wasDisabled:
			next.DisabledReason = endpoint.ReasonManual
		case !next.GetDisabled() && wasDisabled:
			// Re-enabling starts afresh. Any other edit of an enabled
			// endpoint keeps its failure run: resetting it on every edit
			// (a description, say) would postpone auto-disable forever.
			next.DisabledReason, next.FailingSince = "", nil
		}
		reenabled = wasDisabled && !next.GetDisabled()
		rec.Endpoint = next
		return nil
	})
	if err != nil {
		return nil, storeErr(err, "endpoint", id)
	}
	if reenabled {
		// What was held while disabled is sent now (dead letters are
		// left to :recover or a resend).
		held, err := s.Messages.Held(ctx, tenant, id)
		if err == nil {
			_, err = s.requeue(ctx, tenant, id, held)
		}
		if err != nil {
			return nil, storeErr(err, "held messages", id)
		}
	}
	return s.view(rec.Endpoint), nil
}

// DeleteEndpoint deletes an endpoint; its pending tasks are dropped when
// they come up.
func (s *Endpoints) DeleteEndpoint(ctx context.Context, r *dispatcherv1.DeleteEndpointRequest) (*dispatcherv1.DeleteEndpointResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.visible(ctx, tenant, r.GetId()); err != nil {
		return nil, storeErr(err, "endpoint", r.GetId())
	}
	if err := s.Endpoints.Delete(ctx, tenant, r.GetId()); err != nil {
		return nil, storeErr(err, "endpoint", r.GetId())
	}
	return &dispatcherv1.DeleteEndpointResponse{}, nil
}

// RotateEndpointSecret issues a new secret; the old one signs beside it
// for the overlap.
func (s *Endpoints) RotateEndpointSecret(ctx context.Context, r *dispatcherv1.RotateEndpointSecretRequest) (*dispatcherv1.RotateEndpointSecretResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	overlap := s.RotationOverlap
	if o := r.GetOverlap(); o != nil {
		if err := o.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "overlap: %v", err)
		}
		overlap = o.AsDuration()
		if overlap < 0 || overlap > 7*24*time.Hour {
			return nil, status.Errorf(codes.InvalidArgument, "overlap must be between 0s and 168h, got %s", overlap)
		}
	}
	if err := s.visible(ctx, tenant, r.GetId()); err != nil {
		return nil, storeErr(err, "endpoint", r.GetId())
	}
	secret, expires, err := s.Endpoints.Rotate(ctx, tenant, r.GetId(), overlap)
	if err != nil {
		return nil, storeErr(err, "endpoint", r.GetId())
	}
	return &dispatcherv1.RotateEndpointSecretResponse{Secret: secret, PreviousExpireTime: timestamppb.New(expires)}, nil
}

// RecoverEndpoint re-enables the endpoint and queues again what was held
// or dead-lettered since since_time.
func (s *Endpoints) RecoverEndpoint(ctx context.Context, r *dispatcherv1.RecoverEndpointRequest) (*dispatcherv1.RecoverEndpointResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	since := time.Now().Add(-defaultRecoverWindow)
	if st := r.GetSinceTime(); st != nil {
		if err := st.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "since_time: %v", err)
		}
		since = st.AsTime()
	}
	_, err = s.Endpoints.Modify(ctx, tenant, r.GetId(), func(rec *endpoint.Record) error {
		if rec.Callback {
			return endpoint.ErrNotFound
		}
		rec.Endpoint.Disabled, rec.Endpoint.DisabledReason, rec.Endpoint.FailingSince = false, "", nil
		return nil
	})
	if err != nil {
		return nil, storeErr(err, "endpoint", r.GetId())
	}
	ids, err := s.Messages.Recoverable(ctx, tenant, r.GetId(), since)
	if err != nil {
		return nil, storeErr(err, "dead letters", "")
	}
	n, err := s.requeue(ctx, tenant, r.GetId(), ids)
	if err != nil {
		return nil, storeErr(err, "recover", r.GetId())
	}
	return &dispatcherv1.RecoverEndpointResponse{ResentCount: int32(n)}, nil
}

// requeue sends the messages ids to endpoint ep again.
func (s *Endpoints) requeue(ctx context.Context, tenant, ep string, ids []string) (int, error) {
	n := 0
	for _, id := range ids {
		c, err := s.Fanout.Requeue(ctx, s.Gate, tenant, id, []string{ep})
		if errors.Is(err, message.ErrNotFound) || errors.Is(err, fanout.ErrNoEndpoint) {
			continue // expired meanwhile
		}
		if err != nil {
			return n, err
		}
		n += c
	}
	return n, nil
}

// PingType is the type of the test event; its routing key is hookyard.ping.
const PingType = "hookyard.ping"

// SendTestEvent sends a ping to one endpoint only.
func (s *Endpoints) SendTestEvent(ctx context.Context, r *dispatcherv1.SendTestEventRequest) (*dispatcherv1.SendTestEventResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	rec, err := s.Endpoints.Get(ctx, tenant, r.GetId())
	if err == nil && rec.Callback {
		err = endpoint.ErrNotFound
	}
	if err != nil {
		return nil, storeErr(err, "endpoint", r.GetId())
	}
	if rec.Endpoint.GetDisabled() {
		return nil, status.Errorf(codes.FailedPrecondition, "endpoint %q is disabled; recover it first", r.GetId())
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "message id: %v", err)
	}
	now := time.Now().UTC()
	body, _ := json.Marshal(map[string]any{"type": PingType, "endpoint_id": r.GetId(), "time": now.Format(time.RFC3339Nano)})
	m := &message.Message{ID: id.String(), Source: "hookyard", Type: "ping", RoutingKey: PingType,
		ContentType: "application/json", EventTime: now, CreateTime: now, Body: body}
	if _, err := s.Fanout.Dispatch(ctx, tenant, m, []string{r.GetId()}); err != nil {
		return nil, storeErr(err, "send test event", r.GetId())
	}
	return &dispatcherv1.SendTestEventResponse{MessageId: m.ID}, nil
}

// SendMessage publishes a message to hookyard.events through the shared
// publisher, so it takes the same path, rules and dedupe as a received
// webhook or POST /v1/events. It is idempotent on (source, id) per tenant.
func (s *Messages) SendMessage(ctx context.Context, r *dispatcherv1.SendMessageRequest) (*dispatcherv1.Message, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	in := r.GetMessage()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "message is required")
	}
	id, source := in.GetId(), in.GetSource()
	if source == "" {
		source = publish.DefaultSource
	}
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "message id: %v", err)
		}
		id = u.String()
	}
	data := in.GetData()
	if data == nil {
		data = structpb.NewNullValue()
	}
	body, err := protojson.Marshal(data)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "data: %v", err)
	}
	if len(body) > maxBody {
		return nil, status.Errorf(codes.InvalidArgument, "data is %d bytes, at most %d", len(body), maxBody)
	}
	now := time.Now().UTC()
	res, err := s.Events.PublishInternal(ctx, publish.Event{
		Tenant: tenant, Source: source, ID: id, Type: in.GetType(), Time: now,
		ContentType: "application/json", Body: body,
	})
	switch {
	case errors.Is(err, publish.ErrInvalid):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, publish.ErrSourceNotAllowed):
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, publish.ErrInProgress):
		// Not a success yet: the other call may still fail.
		return nil, status.Errorf(codes.Aborted, "message %q is being sent by another request; retry", id)
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	case err != nil:
		s.Log.Warn("send message: publish failed", "message_id", id, "err", err)
		return nil, status.Error(codes.Unavailable, "the event bus is unavailable; retry")
	}
	out := &dispatcherv1.Message{Id: id, Source: source, Type: in.GetType(), Data: data, CreateTime: timestamppb.New(now)}
	if res.Duplicate {
		// A repeat of a call that was published: answer as that call did
		// (the fan-out may not have recorded the message yet).
		if got, err := s.GetMessage(ctx, &dispatcherv1.GetMessageRequest{Id: id}); err == nil && got.GetSource() == source {
			return got, nil
		}
	}
	return out, nil
}

// GetMessage returns a message with its deliveries.
func (s *Messages) GetMessage(ctx context.Context, r *dispatcherv1.GetMessageRequest) (*dispatcherv1.Message, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	m, ds, err := s.Messages.Get(ctx, tenant, r.GetId())
	if err != nil {
		return nil, storeErr(err, "message", r.GetId())
	}
	out := &dispatcherv1.Message{Id: m.ID, Source: m.Source, Type: m.Type, CreateTime: timestamppb.New(m.CreateTime)}
	v := &structpb.Value{}
	if err := protojson.Unmarshal(m.Body, v); err == nil {
		out.Data = v
	} else {
		out.Data = structpb.NewStringValue(strings.ToValidUTF8(string(m.Body), "\uFFFD"))
	}
	for ep, d := range ds {
		del := &dispatcherv1.Delivery{EndpointId: ep, Status: d.Status, Attempts: int32(d.Attempts)}
		if d.Status == message.StatusRetrying && !d.Next.IsZero() {
			del.NextAttemptTime = timestamppb.New(d.Next)
		}
		out.Deliveries = append(out.Deliveries, del)
	}
	sortDeliveries(out.Deliveries)
	return out, nil
}

func sortDeliveries(ds []*dispatcherv1.Delivery) {
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && ds[j].EndpointId < ds[j-1].EndpointId; j-- {
			ds[j], ds[j-1] = ds[j-1], ds[j]
		}
	}
}

// ListMessages pages through the tenant's recent messages, newest first.
func (s *Messages) ListMessages(ctx context.Context, r *dispatcherv1.ListMessagesRequest) (*dispatcherv1.ListMessagesResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	size, err := server.PageSize(r.GetPageSize())
	if err != nil {
		return nil, err
	}
	ms, next, err := s.Messages.Recent(ctx, tenant, size, r.GetPageToken())
	if err != nil {
		return nil, storeErr(err, "messages", "")
	}
	return &dispatcherv1.ListMessagesResponse{Messages: ms, NextPageToken: next}, nil
}

// ListMessageAttempts pages through a message's attempts.
func (s *Messages) ListMessageAttempts(ctx context.Context, r *dispatcherv1.ListMessageAttemptsRequest) (*dispatcherv1.ListMessageAttemptsResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	size, err := server.PageSize(r.GetPageSize())
	if err != nil {
		return nil, err
	}
	if _, _, err := s.Messages.Get(ctx, tenant, r.GetId()); err != nil {
		return nil, storeErr(err, "message", r.GetId())
	}
	atts, next, err := s.Messages.Attempts(ctx, tenant, r.GetId(), size, r.GetPageToken())
	if err != nil {
		return nil, storeErr(err, "attempts", r.GetId())
	}
	return &dispatcherv1.ListMessageAttemptsResponse{Attempts: atts, NextPageToken: next}, nil
}

// ResendMessage queues a message again to its endpoints or one of them.
func (s *Messages) ResendMessage(ctx context.Context, r *dispatcherv1.ResendMessageRequest) (*dispatcherv1.ResendMessageResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	var eps []string
	if e := r.GetEndpointId(); e != "" {
		if _, err := s.Endpoints.Get(ctx, tenant, e); err != nil {
			return nil, storeErr(err, "endpoint", e)
		}
		eps = []string{e}
	}
	n, err := s.Fanout.Requeue(ctx, s.Gate, tenant, r.GetId(), eps)
	if err != nil {
		return nil, storeErr(err, "message", r.GetId())
	}
	return &dispatcherv1.ResendMessageResponse{ResentCount: int32(n)}, nil
}

// ListDeadLetters pages through dead letters, newest first.
func (s *Messages) ListDeadLetters(ctx context.Context, r *dispatcherv1.ListDeadLettersRequest) (*dispatcherv1.ListDeadLettersResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	size, err := server.PageSize(r.GetPageSize())
	if err != nil {
		return nil, err
	}
	if e := r.GetEndpointId(); e != "" {
		// Filtering by another tenant's endpoint is NotFound, as naming it
		// anywhere else is, not an empty page.
		if _, err := s.Endpoints.Get(ctx, tenant, e); err != nil {
			return nil, storeErr(err, "endpoint", e)
		}
	}
	dls, next, err := s.Messages.DeadLetters(ctx, tenant, r.GetEndpointId(), size, r.GetPageToken())
	if err != nil {
		return nil, storeErr(err, "dead letters", "")
	}
	return &dispatcherv1.ListDeadLettersResponse{DeadLetters: dls, NextPageToken: next}, nil
}
