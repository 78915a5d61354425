package api_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// TestEndpointHealth: get and list show what limits an endpoint's
// deliveries, from the state the delivery workers keep in Redis: the
// breakers the replicas report, the failure run, the in-flight leases, the
// rate-limit bucket and the held deliveries.
func TestEndpointHealth(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	ep := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "https://10.1.0.5/hook", RateLimit: 10})
	get := func() *dispatcherv1.EndpointHealth {
		t.Helper()
		got, err := e.eps.GetEndpoint(as(e.acme.key), &dispatcherv1.GetEndpointRequest{Id: ep.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		return got.GetHealth()
	}
	want := &dispatcherv1.EndpointHealth{BreakerState: "closed", RateTokens: 10}
	if got := get(); !proto.Equal(got, want) {
		t.Fatalf("health of a new endpoint: %v, want %v", got, want)
	}

	// Two attempts running, a failure run of three, one delivery held,
	// two replicas with their breaker not closed, and a rate-limit bucket
	// three tokens in debt (reservations ahead). The bucket is written as
	// the admit script leaves it, last refilled in the future, so that no
	// refill happens before it is read.
	gate := admit.New(e.rdb, e.prefix, time.Hour)
	for _, msg := range []string{"m1", "m2"} {
		v, _, err := gate.Admit(ctx, &admit.Request{Endpoint: ep.GetId(), Message: msg, Token: msg, Lease: time.Minute, MaxInFlight: 5})
		if err != nil || v != admit.Go {
			t.Fatalf("admit: %v %v", v, err)
		}
	}
	bucket := e.prefix + ":bucket:{" + ep.GetId() + "}"
	if err := e.rdb.HSet(ctx, bucket, "t", "-3", "at", time.Now().Add(time.Hour).UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := e.endpoints.MarkFailing(ctx, e.acme.name, ep.GetId(), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.store.Hold(ctx, e.acme.name, "m3", ep.GetId(), time.Now()); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	if err := gate.ReportBreaker(ctx, ep.GetId(), "replica-a", admit.BreakerOpen, until); err != nil {
		t.Fatal(err)
	}
	if err := gate.ReportBreaker(ctx, ep.GetId(), "replica-b", admit.BreakerHalfOpen, time.Time{}); err != nil {
		t.Fatal(err)
	}
	got := get()
	if got.GetBreakerState() != "open" || !got.GetBreakerUntil().AsTime().Equal(until) || got.GetBreakerReplicas() != 2 ||
		got.GetFailureCount() != 3 || got.GetInFlight() != 2 || got.GetHeldCount() != 1 || got.GetRateTokens() != -3 {
		t.Fatalf("health: %v", got)
	}
	list, err := e.eps.ListEndpoints(as(e.acme.key), &dispatcherv1.ListEndpointsRequest{})
	if err != nil || len(list.GetEndpoints()) != 1 || list.GetEndpoints()[0].GetHealth().GetFailureCount() != 3 {
		t.Fatalf("list: %v %v", list, err)
	}
	body := e.restOK(t, "GET", "/v1/endpoints/"+ep.GetId(), e.acme.key, "")
	if h, _ := body["health"].(map[string]any); h["breakerState"] != "open" || h["inFlight"] != float64(2) {
		t.Fatalf("REST health: %v", body["health"])
	}

	// An open breaker whose time is up lets a probe through: half-open.
	if err := gate.ReportBreaker(ctx, ep.GetId(), "replica-a", admit.BreakerOpen, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := get(); got.GetBreakerState() != "half_open" || got.GetBreakerUntil() != nil {
		t.Fatalf("health with the breakers half-open: %v", got)
	}
	// Closed breakers and the end of the run leave nothing behind.
	for _, r := range []string{"replica-a", "replica-b"} {
		if err := gate.ReportBreaker(ctx, ep.GetId(), r, admit.BreakerClosed, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.endpoints.ClearFailing(ctx, e.acme.name, ep.GetId()); err != nil {
		t.Fatal(err)
	}
	if got := get(); got.GetBreakerState() != "closed" || got.GetBreakerReplicas() != 0 || got.GetFailureCount() != 0 {
		t.Fatalf("health after recovery: %v", got)
	}

	// Health is output only: an update naming it is refused, and one
	// sending it without a mask stores nothing of it.
	_, err = e.eps.UpdateEndpoint(as(e.acme.key), &dispatcherv1.UpdateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Id: ep.GetId(), Health: &dispatcherv1.EndpointHealth{HeldCount: 99}, Description: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.endpoints.Get(ctx, e.acme.name, ep.GetId())
	if err != nil || rec.Endpoint.GetHealth() != nil {
		t.Fatalf("stored endpoint: %v %v", rec, err)
	}
}

// TestListQueues: the depths of the dispatcher's queues, read from the
// broker, for any tenant's key (they are shared, so only aggregates).
func TestListQueues(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	got, err := e.queues.ListQueues(as(e.acme.key), &dispatcherv1.ListQueuesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetQueues()) != len(e.names.All()) {
		t.Fatalf("%d queues, want %d: %v", len(got.GetQueues()), len(e.names.All()), got)
	}
	for _, q := range got.GetQueues() {
		if !q.GetMissing() {
			t.Fatalf("queue %s exists before it was declared", q.GetName())
		}
	}
	_, err = e.queues.ListQueues(as(""), &dispatcherv1.ListQueuesRequest{})
	wantCode(t, "list queues without a key", err, codes.Unauthenticated)

	// Declared, with two tasks ready and one waiting in the longest delay.
	conn := testenv.Rabbit(t, e.names.Declare)
	t.Cleanup(func() { testenv.DeleteQueues(e.names.All(), e.names.Delays().Exchange()) })
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	longest := e.names.Delays().Queue(4 * time.Hour)
	for _, key := range []string{e.names.Deliveries, e.names.Deliveries, longest} {
		if err := ch.PublishWithContext(ctx, "", key, true, false, amqp.Publishing{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	byName := map[string]*dispatcherv1.DispatcherQueue{}
	testenv.WaitFor(t, 10*time.Second, "the published tasks to count", func() bool {
		got, err = e.queues.ListQueues(as(e.globex.key), &dispatcherv1.ListQueuesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range got.GetQueues() {
			byName[q.GetName()] = q
		}
		return byName[e.names.Deliveries].GetReady() == 2 && byName[longest].GetReady() == 1
	})
	for _, q := range got.GetQueues() {
		if q.GetMissing() {
			t.Errorf("queue %s missing after declare", q.GetName())
		}
	}
	if q := byName[longest]; q.GetKind() != "delay" || q.GetDelay().AsDuration() != 4*time.Hour {
		t.Errorf("longest delay queue: %v", q)
	}
	if q := got.GetQueues()[0]; q.GetName() != e.names.Events || q.GetKind() != "events" || q.GetReady() != 0 {
		t.Errorf("first queue: %v", q)
	}
	if q := got.GetQueues()[len(got.GetQueues())-1]; q.GetKind() != "dead_letter" {
		t.Errorf("last queue: %v", q)
	}
	body := e.restOK(t, "GET", "/v1/deliveryQueues", e.acme.key, "")
	if qs, _ := body["queues"].([]any); len(qs) != len(got.GetQueues()) {
		t.Errorf("REST queues: %v", body)
	}
}
