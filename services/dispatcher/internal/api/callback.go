package api

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/fanout"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
)

// maxCallbackBody leaves room for a completion's envelope around a task
// result of up to 1 MiB (the jobs service's cap): a size refusal is final
// for the handover, so a result jobs accepted must never meet it.
const maxCallbackBody = maxBody + 256<<10

// Callbacks implements CallbackService: one-off deliveries handed over by
// the other services (the jobs service's completion callbacks).
//
// A callback target is a hidden endpoint (endpoint.PutCallback), one per
// tenant, URL and secret, kept for twice the retention from its last
// callback, so it outlives every message that names it. The message is
// recorded and its delivery queued as SendTestEvent does it (fanout
// Dispatch to that one endpoint), so the delivery worker, the retry
// schedule, dead letters and resends treat it like any other delivery.
type Callbacks struct {
	dispatcherv1.UnimplementedCallbackServiceServer
	Deps
	// ServiceKey is HOOKYARD_SERVICE_KEY; empty refuses every call.
	ServiceKey string
	// TenantKeys are the API keys: a tenant's key is told it may not call
	// this service (PermissionDenied) rather than that it is unknown.
	TenantKeys auth.Keys
}

// SendCallback records the message with a delivery to the callback
// endpoint of url and secret and queues that delivery unless it is under
// way.
func (s *Callbacks) SendCallback(ctx context.Context, r *dispatcherv1.SendCallbackRequest) (*dispatcherv1.SendCallbackResponse, error) {
	if err := auth.CheckServiceKey(ctx, s.ServiceKey); err != nil {
		var header string
		if v := metadata.ValueFromIncomingContext(ctx, "authorization"); len(v) > 0 {
			header = v[0]
		}
		if _, terr := s.TenantKeys.Authenticate(header); terr == nil {
			return nil, status.Error(codes.PermissionDenied, "CallbackService is for the Hookyard services (HOOKYARD_SERVICE_KEY), not for tenant API keys")
		}
		return nil, err
	}
	tenant := r.GetTenant()
	if !auth.ValidTenant(tenant) {
		return nil, server.BadRequest(domain, fmt.Errorf("tenant %q: use letters, digits, '-' or '_' (at most 63)", tenant))
	}
	if err := publish.ValidID(r.GetMessageId()); err != nil {
		return nil, server.BadRequest(domain, fmt.Errorf("message_id: %w", err))
	}
	if err := publish.ValidSource(r.GetSource()); err != nil {
		return nil, server.BadRequest(domain, err)
	}
	if err := publish.ValidType(r.GetType()); err != nil {
		return nil, server.BadRequest(domain, err)
	}
	if _, err := sign.ParseSecret(r.GetSecret()); err != nil {
		return nil, server.BadRequest(domain, fmt.Errorf("secret: %w", err))
	}
	if err := endpoint.Validate(&dispatcherv1.Endpoint{Url: r.GetUrl()}, s.Policy); err != nil {
		return nil, server.BadRequest(domain, err)
	}
	if len(r.GetData()) > maxCallbackBody {
		return nil, status.Errorf(codes.InvalidArgument, "data is %d bytes, at most %d", len(r.GetData()), maxCallbackBody)
	}
	ct := r.GetContentType()
	if ct == "" {
		ct = "application/json"
	}
	now := time.Now().UTC()
	m := &message.Message{
		ID: r.GetMessageId(), Source: r.GetSource(), Type: r.GetType(),
		RoutingKey: publish.RoutingKey(r.GetSource(), r.GetType()), ContentType: ct, CreateTime: now, Body: r.GetData(),
	}
	if t := r.GetEventTime(); t != nil {
		m.EventTime = t.AsTime()
	}
	rec, err := s.Endpoints.PutCallback(ctx, tenant, r.GetUrl(), r.GetSecret(), 2*s.Retention)
	if err != nil {
		return nil, storeErr(err, "callback endpoint", "")
	}
	id := rec.Endpoint.GetId()
	if _, err := s.Fanout.Dispatch(ctx, tenant, m, []string{id}); err != nil {
		if fanout.IsPermanent(err) {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		return nil, storeErr(err, "callback", m.ID)
	}
	s.Log.DebugContext(ctx, "callback queued", "tenant", tenant, "message_id", m.ID, "endpoint_id", id)
	return &dispatcherv1.SendCallbackResponse{MessageId: m.ID, EndpointId: id}, nil
}
