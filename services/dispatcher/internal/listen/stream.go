package listen

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/topic"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
)

// batch is how many stream entries are read at once.
const batch = 100

// StreamEvents implements EventStreamService.StreamEvents.
func (h *Hub) StreamEvents(req *dispatcherv1.StreamEventsRequest, stream grpc.ServerStreamingServer[dispatcherv1.StreamEventsResponse]) error {
	ctx := stream.Context()
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return err
	}
	if err := endpoint.ValidatePatterns(req.GetEventTypes()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if c := req.GetCursor(); c != "" && !validCursor(c) {
		return status.Errorf(codes.InvalidArgument, "cursor %q is not one this service returned", c)
	}
	wasListened := h.listened(tenant)
	if err := h.open(tenant); err != nil {
		return err
	}
	defer h.closeStream(ctx, tenant)
	if err := h.mark(ctx, tenant); err != nil {
		return unavailable(err)
	}

	cursor, gap, err := h.start(ctx, tenant, req.GetCursor())
	if err != nil {
		return unavailable(err)
	}
	if !wasListened {
		// Other replicas learn of the tenant at their next refresh; the
		// stream counts as open once they have.
		select {
		case <-time.After(2 * h.cfg.Refresh):
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	ready := &dispatcherv1.StreamEventsResponse{Cursor: cursor, Item: &dispatcherv1.StreamEventsResponse_Ready{
		Ready: &dispatcherv1.StreamReady{Gap: gap, ResumeWindow: durationpb.New(h.cfg.Window)},
	}}
	if err := stream.Send(ready); err != nil {
		return err
	}

	heartbeat := time.NewTicker(max(h.cfg.Window/4, time.Second))
	defer heartbeat.Stop()
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		wake := h.waiter(tenant)
		n, next, err := h.send(ctx, tenant, cursor, req, stream)
		if err != nil {
			return err
		}
		cursor = next
		if n == batch {
			continue // more are waiting
		}
		poll.Reset(h.cfg.Poll)
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-h.done:
			return status.Error(codes.Unavailable, "the dispatcher is shutting down; resume with the last cursor")
		case <-heartbeat.C:
			if err := h.mark(ctx, tenant); err != nil {
				return unavailable(err)
			}
		case <-wake:
		case <-poll.C:
		}
	}
}

// start returns the id after which a stream begins and whether items
// after cursor may have been dropped.
func (h *Hub) start(ctx context.Context, tenant, cursor string) (string, bool, error) {
	key := h.streamKey(tenant)
	if cursor == "" {
		last, err := h.rdb.XRevRangeN(ctx, key, "+", "-", 1).Result()
		if err != nil {
			return "", false, fmt.Errorf("read stream: %w", err)
		}
		if len(last) == 0 {
			return "0-0", false, nil
		}
		return last[0].ID, false, nil
	}
	info, err := h.rdb.XInfoStream(ctx, key).Result()
	if err != nil {
		if isNoSuchKey(err) {
			// The stream expired: whatever came meanwhile is gone.
			return cursor, true, nil
		}
		return "", false, fmt.Errorf("read stream: %w", err)
	}
	trimmed := info.MaxDeletedEntryID != "" && info.MaxDeletedEntryID != "0-0" && !before(info.MaxDeletedEntryID, cursor)
	return cursor, trimmed, nil
}

func isNoSuchKey(err error) bool {
	return errors.Is(err, redis.Nil) || strings.Contains(strings.ToLower(err.Error()), "no such key")
}

// send sends the items after cursor (at most batch) and returns how many
// entries it read and the new cursor.
func (h *Hub) send(ctx context.Context, tenant, cursor string, req *dispatcherv1.StreamEventsRequest, stream grpc.ServerStreamingServer[dispatcherv1.StreamEventsResponse]) (int, string, error) {
	entries, err := h.rdb.XRangeN(ctx, h.streamKey(tenant), "("+cursor, "+", batch).Result()
	if err != nil {
		if ctx.Err() != nil {
			return 0, cursor, status.FromContextError(ctx.Err()).Err()
		}
		return 0, cursor, unavailable(fmt.Errorf("read stream: %w", err))
	}
	for _, e := range entries {
		resp, err := h.item(ctx, tenant, e, req)
		if err != nil {
			return 0, cursor, err
		}
		if resp != nil {
			resp.Cursor = e.ID
			if err := stream.Send(resp); err != nil {
				return 0, cursor, err
			}
		}
		cursor = e.ID
	}
	return len(entries), cursor, nil
}

// item turns a stream entry into a response, or nil if it is not wanted
// (filtered out, or its message expired).
func (h *Hub) item(ctx context.Context, tenant string, e redis.XMessage, req *dispatcherv1.StreamEventsRequest) (*dispatcherv1.StreamEventsResponse, error) {
	str := func(k string) string { s, _ := e.Values[k].(string); return s }
	id := str("m")
	switch str("k") {
	case "e":
		if !topic.MatchAny(req.GetEventTypes(), str("r")) {
			return nil, nil
		}
		m, _, err := h.msgs.Get(ctx, tenant, id)
		if errors.Is(err, message.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, unavailable(err)
		}
		return &dispatcherv1.StreamEventsResponse{Item: &dispatcherv1.StreamEventsResponse_Event{Event: streamed(tenant, m)}}, nil
	case "a":
		if !req.GetIncludeAttempts() {
			return nil, nil
		}
		a := &dispatcherv1.Attempt{}
		if err := proto.Unmarshal([]byte(str("a")), a); err != nil {
			return nil, nil
		}
		return &dispatcherv1.StreamEventsResponse{Item: &dispatcherv1.StreamEventsResponse_Attempt{
			Attempt: &dispatcherv1.StreamedAttempt{MessageId: id, Attempt: a},
		}}, nil
	}
	return nil, nil
}

func streamed(tenant string, m *message.Message) *dispatcherv1.StreamedEvent {
	ev := &eventv1.Event{
		Id: m.ID, Source: m.Source, Type: m.Type, SpecVersion: "1.0", Tenant: tenant,
		DataContentType: m.ContentType, Data: m.Body,
	}
	if m.Orig != "" {
		ev.Id = m.Orig
	}
	if !m.EventTime.IsZero() {
		ev.Time = timestamppb.New(m.EventTime)
	} else {
		ev.Time = timestamppb.New(m.CreateTime)
	}
	return &dispatcherv1.StreamedEvent{Event: ev, MessageId: m.ID, RoutingKey: m.RoutingKey}
}

// open counts a stream of tenant in, within the limits.
func (h *Hub) open(tenant string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams >= h.cfg.MaxStreams {
		return status.Errorf(codes.ResourceExhausted, "this replica serves %d event streams, its maximum; try again later", h.cfg.MaxStreams)
	}
	if h.local[tenant] >= h.cfg.MaxPerTenant {
		return status.Errorf(codes.ResourceExhausted, "the tenant has %d event streams open on this replica, its maximum", h.cfg.MaxPerTenant)
	}
	h.streams++
	h.local[tenant]++
	return nil
}

// closeStream counts a stream out; the window of the tenant restarts, so a
// client that reconnects within it misses nothing.
func (h *Hub) closeStream(ctx context.Context, tenant string) {
	h.mu.Lock()
	h.streams--
	if h.local[tenant]--; h.local[tenant] <= 0 {
		delete(h.local, tenant)
		delete(h.wake, tenant) // nobody here waits on it any more
	}
	h.mu.Unlock()
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := h.mark(mctx, tenant); err != nil {
		h.log.Warn("renewing the listen window failed", "err", err, "tenant", tenant)
	}
}

func unavailable(err error) error {
	return status.Errorf(codes.Unavailable, "event stream: %v", err)
}
