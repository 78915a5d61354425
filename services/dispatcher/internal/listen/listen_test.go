package listen_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/dispatcher/dispatchertest"
	"github.com/hookyard/hookyard/services/dispatcher/internal/dispatcher"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

const timeout = 30 * time.Second

func client(t *testing.T, s *dispatchertest.Server) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func withKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// stream opens a stream and returns its items on a channel; cancel drops it.
type stream struct {
	items  chan *dispatcherv1.StreamEventsResponse
	errc   chan error
	cancel context.CancelFunc
}

func open(t *testing.T, cc *grpc.ClientConn, key string, req *dispatcherv1.StreamEventsRequest) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(withKey(context.Background(), key))
	t.Cleanup(cancel)
	st, err := dispatcherv1.NewEventStreamServiceClient(cc).StreamEvents(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	s := &stream{items: make(chan *dispatcherv1.StreamEventsResponse, 100), errc: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				s.errc <- err
				return
			}
			s.items <- r
		}
	}()
	return s
}

func (s *stream) next(t *testing.T) *dispatcherv1.StreamEventsResponse {
	t.Helper()
	select {
	case r := <-s.items:
		return r
	case err := <-s.errc:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(timeout):
		t.Fatal("timed out waiting for a stream item")
	}
	return nil
}

// event returns the next event, skipping attempts.
func (s *stream) event(t *testing.T) *dispatcherv1.StreamEventsResponse {
	t.Helper()
	for {
		r := s.next(t)
		if r.GetEvent() != nil {
			return r
		}
		if r.GetReady() != nil {
			t.Fatalf("second ready: %v", r)
		}
	}
}

func TestStreamsEventsAndAttempts(t *testing.T) {
	s := dispatchertest.Start(t, dispatchertest.Options{})
	cc := client(t, s)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	t.Cleanup(sink.Close)
	ctx := withKey(context.Background(), s.Keys["a"])
	ep, err := dispatcherv1.NewEndpointServiceClient(cc).CreateEndpoint(ctx, &dispatcherv1.CreateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Url: sink.URL}})
	if err != nil {
		t.Fatal(err)
	}
	st := open(t, cc, s.Keys["a"], &dispatcherv1.StreamEventsRequest{IncludeAttempts: true})
	ready := st.next(t)
	if ready.GetReady() == nil || ready.GetReady().GetGap() || ready.GetCursor() == "" {
		t.Fatalf("first item = %v, want ready without gap, with a cursor", ready)
	}
	body := []byte(`{"amount": 12,  "raw":true}`)
	s.Publish(t, "a", "evt-1", "invoice.paid", body)

	// The event comes before its attempts: the fan-out makes the first
	// attempt itself, and an attempt recorded ahead of its event was
	// skipped by a reader waiting for the event.
	first := st.next(t)
	ev := first.GetEvent()
	if ev == nil {
		t.Fatalf("first item after ready = %v, want the event before its attempts", first)
	}
	if ev.GetMessageId() != "evt-1" || ev.GetRoutingKey() != s.ID+".invoice.paid" || !bytes.Equal(ev.GetEvent().GetData(), body) ||
		ev.GetEvent().GetTenant() != s.Tenants["a"] || ev.GetEvent().GetType() != "invoice.paid" {
		t.Fatalf("event = %v", ev)
	}
	for {
		r := st.next(t)
		if a := r.GetAttempt(); a != nil {
			if a.GetMessageId() != "evt-1" || a.GetAttempt().GetEndpointId() != ep.GetId() || a.GetAttempt().GetStatusCode() != http.StatusAccepted {
				t.Fatalf("attempt = %v", a)
			}
			break
		}
	}
}

// TestResumeAfterDrop: events sent while no stream is open reach the
// stream that resumes with the last cursor, in order, once.
func TestResumeAfterDrop(t *testing.T) {
	s := dispatchertest.Start(t, dispatchertest.Options{})
	cc := client(t, s)
	st := open(t, cc, s.Keys["a"], &dispatcherv1.StreamEventsRequest{})
	st.next(t) // ready
	s.Publish(t, "a", "evt-1", "order.created", []byte(`{"n":1}`))
	first := st.event(t)
	if first.GetEvent().GetMessageId() != "evt-1" {
		t.Fatalf("first event = %v", first)
	}
	st.cancel()

	for i := 2; i <= 4; i++ {
		s.Publish(t, "a", "evt-"+string(rune('0'+i)), "order.created", []byte(`{}`))
	}
	// The events are fanned out (and recorded) while nobody listens.
	mc := dispatcherv1.NewMessageServiceClient(cc)
	dispatchertest.WaitFor(t, timeout, "events recorded", func() bool {
		_, err := mc.GetMessage(withKey(context.Background(), s.Keys["a"]), &dispatcherv1.GetMessageRequest{Id: "evt-4"})
		return err == nil
	})

	again := open(t, cc, s.Keys["a"], &dispatcherv1.StreamEventsRequest{Cursor: first.GetCursor()})
	if r := again.next(t); r.GetReady() == nil || r.GetReady().GetGap() {
		t.Fatalf("resumed stream began with %v, want ready without gap", r)
	}
	got := map[string]bool{}
	for len(got) < 3 {
		id := again.event(t).GetEvent().GetMessageId()
		if got[id] || id == "evt-1" {
			t.Fatalf("event %s streamed twice", id)
		}
		got[id] = true
	}
	for _, id := range []string{"evt-2", "evt-3", "evt-4"} {
		if !got[id] {
			t.Fatalf("resumed stream missed %s: got %v", id, got)
		}
	}
}

// TestTenantIsolation: a tenant's stream never carries another tenant's
// events, and event_types filters.
func TestTenantIsolation(t *testing.T) {
	s := dispatchertest.Start(t, dispatchertest.Options{})
	cc := client(t, s)
	a := open(t, cc, s.Keys["a"], &dispatcherv1.StreamEventsRequest{IncludeAttempts: true, EventTypes: []string{s.ID + ".invoice.*"}})
	b := open(t, cc, s.Keys["b"], &dispatcherv1.StreamEventsRequest{IncludeAttempts: true})
	a.next(t)
	b.next(t)

	s.Publish(t, "b", "b-1", "invoice.paid", []byte(`{"secret":"of b"}`))
	if ev := b.event(t).GetEvent(); ev.GetMessageId() != "b-1" {
		t.Fatalf("b got %v", ev)
	}
	s.Publish(t, "a", "a-skipped", "customer.created", []byte(`{}`))
	s.Publish(t, "a", "a-1", "invoice.paid", []byte(`{}`))
	ev := a.event(t).GetEvent()
	if ev.GetMessageId() != "a-1" || ev.GetEvent().GetTenant() != s.Tenants["a"] {
		t.Fatalf("a's first event = %v, want a-1 (b-1 is b's, a-skipped is filtered out)", ev)
	}
}

func TestBadKey(t *testing.T) {
	s := dispatchertest.Start(t, dispatchertest.Options{})
	cc := client(t, s)
	st := open(t, cc, "not-a-key-of-anyone", &dispatcherv1.StreamEventsRequest{})
	select {
	case err := <-st.errc:
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("err = %v, want Unauthenticated", err)
		}
	case r := <-st.items:
		t.Fatalf("got %v with a bad key", r)
	case <-time.After(timeout):
		t.Fatal("timed out")
	}
}

// TestGapAfterWindow: a stream resumed after the window has passed is told
// that it may have missed events.
func TestGapAfterWindow(t *testing.T) {
	s := dispatchertest.Start(t, dispatchertest.Options{Tweak: func(c *dispatcher.Config) { c.ListenWindow = time.Second }})
	cc := client(t, s)
	st := open(t, cc, s.Keys["a"], &dispatcherv1.StreamEventsRequest{})
	st.next(t)
	s.Publish(t, "a", "evt-1", "x.y", []byte(`{}`))
	first := st.event(t)
	st.cancel()

	rdb, err := redisconn.Open(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	key := testenv.KeyPrefix(s.ID) + ":listen:{" + s.Tenants["a"] + "}"
	dispatchertest.WaitFor(t, timeout, "stream to expire", func() bool {
		n, err := rdb.Exists(context.Background(), key).Result()
		return err == nil && n == 0
	})
	again := open(t, cc, s.Keys["a"], &dispatcherv1.StreamEventsRequest{Cursor: first.GetCursor()})
	if r := again.next(t); !r.GetReady().GetGap() {
		t.Fatalf("resumed after the window: %v, want ready with gap", r)
	}
}

func TestBadCursor(t *testing.T) {
	s := dispatchertest.Start(t, dispatchertest.Options{})
	cc := client(t, s)
	st := open(t, cc, s.Keys["a"], &dispatcherv1.StreamEventsRequest{Cursor: "nonsense"})
	select {
	case err := <-st.errc:
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("err = %v, want InvalidArgument", err)
		}
	case <-time.After(timeout):
		t.Fatal("timed out")
	}
}
