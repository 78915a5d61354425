package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	grpccodes "google.golang.org/grpc/codes"
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

// A call served in process gets the server span a call over the network
// gets from ServerHandler: a child of the caller's, named after the
// method, with its code when spans are exported.
func TestCallSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	defer otel.SetTracerProvider(prev)
	defer exported.Store(exported.Load())

	start := CallSpans()
	ctx, parent := Tracer().Start(context.Background(), "POST")
	for _, export := range []bool{false, true} {
		exported.Store(export)
		cctx, end := start(ctx, "/hookyard.jobs.v1.TaskService/GetTask")
		if trace.SpanContextFromContext(cctx).SpanID() == parent.SpanContext().SpanID() {
			t.Fatal("the call has no span of its own")
		}
		end(grpccodes.Internal)
	}
	parent.End()
	spans := rec.Ended()
	if len(spans) != 3 {
		t.Fatalf("%d spans ended, want 3", len(spans))
	}
	for _, s := range spans[:2] {
		if s.Name() != "hookyard.jobs.v1.TaskService/GetTask" || s.SpanKind() != trace.SpanKindServer || s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("call span %q kind %v parent %v", s.Name(), s.SpanKind(), s.Parent().SpanID())
		}
	}
	if s := spans[1]; s.Status().Code != codes.Error || !slices.Contains(s.Attributes(), attribute.Int64("rpc.grpc.status_code", int64(grpccodes.Internal))) {
		t.Errorf("exported call span: status %v attributes %v", s.Status(), s.Attributes())
	}
}
