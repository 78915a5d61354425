package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// A traceparent read from AMQP headers continues into the consumer's span
// and is written again, with the same trace id, on what it publishes and
// on its outbound HTTP requests.
func TestAMQPRoundTrip(t *testing.T) {
	tracer := sdktrace.NewTracerProvider().Tracer("test")
	ctx := ExtractAMQP(context.Background(), amqp.Table{"traceparent": parent})
	ctx, span := tracer.Start(ctx, "consume")
	defer span.End()

	out := amqp.Table{"x-other": "kept"}
	InjectAMQP(ctx, out)
	tp, _ := out["traceparent"].(string)
	if !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || tp == parent || out["x-other"] != "kept" {
		t.Fatalf("published headers = %v", out)
	}
	h := http.Header{}
	InjectHTTP(ctx, h)
	if got := h.Get("traceparent"); got != tp {
		t.Errorf("outbound traceparent = %q, want %q", got, tp)
	}
}

// Without a span in the context nothing is written, so a traceparent that
// the caller put in the headers itself is kept.
func TestInjectWithoutSpanKeepsHeaders(t *testing.T) {
	h := amqp.Table{"traceparent": parent}
	InjectAMQP(context.Background(), h)
	if h["traceparent"] != parent {
		t.Errorf("traceparent = %v", h["traceparent"])
	}
	// A []byte header value (another client's encoding) is read too.
	ctx := ExtractAMQP(context.Background(), amqp.Table{"traceparent": []byte(parent)})
	if id, _ := IDs(ctx); id != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("trace id from []byte header = %q", id)
	}
}

// The HTTP middleware continues the caller's trace, and a log line
// written with the request's context carries the trace id.
func TestHandlerAndLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "test")
	var seen trace.SpanContext
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhooks/{source}", func(w http.ResponseWriter, r *http.Request) {
		seen = trace.SpanContextFromContext(r.Context())
		log.InfoContext(r.Context(), "received")
		w.WriteHeader(http.StatusAccepted)
	})
	req := httptest.NewRequest(http.MethodPost, "/webhooks/stripe", nil)
	req.Header.Set("traceparent", parent)
	rec := httptest.NewRecorder()
	Handler(mux).ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d", rec.Code)
	}
	if seen.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("handler saw trace %s", seen.TraceID())
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || line["span_id"] == "" || line["service"] != "test" {
		t.Errorf("log line = %v", line)
	}

	// No span, no ids.
	buf.Reset()
	log.InfoContext(context.Background(), "plain")
	if strings.Contains(buf.String(), "trace_id") {
		t.Errorf("log line without a span has a trace id: %s", buf.String())
	}
}

// Setup without OTEL_EXPORTER_OTLP_ENDPOINT exports nothing but still makes
// trace ids for requests that come without one.
func TestSetupWithoutExporter(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	if Exporting() {
		t.Fatal("Exporting with no endpoint set")
	}
	stop, err := Setup(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer stop(context.Background())
	ctx, span := Tracer().Start(context.Background(), "root")
	defer span.End()
	if id, _ := IDs(ctx); id == "" {
		t.Error("no trace id made")
	}
}

func TestCarryResume(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ctx := Resume(context.Background(), tp)
	if got := Carry(ctx); got != tp {
		t.Fatalf("Carry(Resume(%q)) = %q", tp, got)
	}
	if got := Carry(context.Background()); got != "" {
		t.Fatalf("Carry without a span = %q, want empty", got)
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01"} {
		if got := Carry(Resume(context.Background(), bad)); got != "" {
			t.Fatalf("Resume(%q) carried %q, want nothing", bad, got)
		}
	}
}

// BenchmarkStartConsume: the span of every consumed message, with the
// SDK installed and nothing exported (the default).
func BenchmarkStartConsume(b *testing.B) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	otel.SetTracerProvider(tp)
	d := amqp.Delivery{Headers: amqp.Table{"traceparent": parent}, RoutingKey: "stripe.invoice.paid", MessageId: "evt_1"}
	b.ReportAllocs()
	for b.Loop() {
		ctx, end := StartConsume(context.Background(), "hookyard.dispatcher.events", d)
		if !trace.SpanContextFromContext(ctx).IsValid() {
			b.Fatal("no span")
		}
		end()
	}
}
