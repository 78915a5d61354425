package dispatcher

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/logtest"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/trace"
)

// An event published with a W3C traceparent (as ingress publishes a
// webhook received inside a trace) reaches the subscriber with a
// traceparent of the same trace: through the fan-out, the deliveries
// queue, and a retry through the delay queues.
func TestDeliveryCarriesTraceparent(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	var logs logtest.Buffer
	h := newHarnessLogging(t, loopback, nil, trace.LogHandler(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	var n atomic.Int32
	s := newSink(t, func(request) int {
		if n.Add(1) == 1 {
			return http.StatusServiceUnavailable // the second attempt is a retry
		}
		return http.StatusOK
	})
	h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL + "/hook", EventTypes: []string{h.id + ".#"}})

	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: "evt-traced", Source: h.id, Type: "invoice.paid", Tenant: h.tenant, Time: timestamppb.Now(),
		DataContentType: "application/json", Data: []byte(`{}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	msg.Headers["traceparent"] = "00-" + traceID + "-00f067aa0ba902b7-01"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.d.Publisher.Publish(ctx, rabbit.EventsExchange, cloudevent.RoutingKey(h.id, "invoice.paid"), msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a failed attempt and its retry", func() bool { return len(s.all()) >= 2 })
	for i, r := range s.all()[:2] {
		tp := r.header.Get("traceparent")
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || parts[0] != "00" || parts[1] != traceID {
			t.Errorf("attempt %d: traceparent %q, want trace %s", i+1, tp, traceID)
		}
	}

	// The log lines of both attempts carry the trace id too.
	waitFor(t, 30*time.Second, "the log lines of both attempts", func() bool {
		n := 0
		for _, line := range logs.Lines() {
			if line["msg"] == "delivery attempt" && line["message_id"] == "evt-traced" {
				n++
				if line["trace_id"] != traceID {
					t.Fatalf("delivery log line %v, want trace_id %s", line, traceID)
				}
			}
		}
		return n >= 2
	})
}
