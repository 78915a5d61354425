package invalidate

import (
	"context"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/logtest"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/cache/internal/metrics"
)

// A line logged while handling an event carries the event's trace id, so
// an operator can follow a webhook's trace into the cache's invalidation.
func TestHandleLogsUnderTheEventsTrace(t *testing.T) {
	var logs logtest.Buffer
	c := &Consumer{
		Metrics: metrics.New(prometheus.NewRegistry()),
		Log:     slog.New(trace.LogHandler(slog.NewJSONHandler(&logs, nil))),
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := trace.Resume(context.Background(), "00-"+traceID+"-00f067aa0ba902b7-01")
	c.Handle(ctx, amqp.Delivery{MessageId: "not-a-cloudevent"})
	lines := logs.Lines()
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1: %v", len(lines), lines)
	}
	if lines[0]["trace_id"] != traceID {
		t.Fatalf("log line %v, want trace_id %s", lines[0], traceID)
	}
}
