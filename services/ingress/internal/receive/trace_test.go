package receive

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/trace"
)

// A webhook that arrives with a traceparent (through the servers' trace
// middleware, as in every service) is published with a traceparent of the
// same trace in its AMQP headers, for the consumers to continue.
func TestWebhookTraceparentOnTheBus(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	h := newHarness(t, "")
	body := []byte(`{"id":"evt_traced","type":"invoice.paid","data":{}}`)
	req := httptest.NewRequest(http.MethodPost, "/webhooks/"+h.source, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", stripeSign(body, time.Now(), secret))
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	rec := httptest.NewRecorder()
	trace.Handler(h.srv.Config.Handler).ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	d, ok, err := h.ch.Get(h.queue, true)
	if err != nil || !ok {
		t.Fatalf("no message on the bus: %v", err)
	}
	tp, _ := d.Headers["traceparent"].(string)
	if parts := strings.Split(tp, "-"); len(parts) != 4 || parts[1] != traceID {
		t.Fatalf("traceparent on the bus = %q, want trace %s (headers %v)", tp, traceID, d.Headers)
	}
}
