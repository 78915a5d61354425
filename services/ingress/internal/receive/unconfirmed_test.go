package receive

import (
	"net/http"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/testwait"
)

// The broker does not answer a publish in time (a frozen connection, as in
// a stall of the host), so the webhook is answered 503; then the broker
// stores it after all. The answer was not a lie as long as the provider's
// retry is told the truth: a duplicate, not a second publish.
func TestLateConfirmMakesTheRetryADuplicate(t *testing.T) {
	h := newHarness(t, "")
	h.handler.ingest.ConfirmTimeout = 100 * time.Millisecond
	// One publish first, so that the confirm channel is open before the
	// broker stops answering.
	warm := []byte(`{"id":"evt_warm","type":"invoice.paid"}`)
	if code, _, resp := h.post(warm, stripeSign(warm, time.Now(), secret)); code != http.StatusAccepted {
		t.Fatalf("first webhook answered %d %s", code, resp)
	}
	body := []byte(`{"id":"evt_late","type":"invoice.paid"}`)
	sig := stripeSign(body, time.Now(), secret)

	h.proxy.Freeze()
	code, _, resp := h.post(body, sig)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("unconfirmed publish answered %d %s, want 503", code, resp)
	}
	h.proxy.Thaw()
	h.waitCount(2)

	// Until the claim follows the broker's answer a retry may be told to
	// come back (409); after that it is a duplicate.
	testwait.Eventually(t, 20*time.Second, "the retry answered as a duplicate", func() bool {
		code, _, resp = h.post(body, sig)
		switch code {
		case http.StatusConflict:
			return false
		case http.StatusOK:
			return true
		}
		t.Fatalf("retry after the late confirm answered %d %s, want 200 duplicate (or 409 while pending)", code, resp)
		return true
	})
	if n := h.count(); n != 2 {
		t.Fatalf("queue holds %d messages, want 2", n)
	}
}

// A confirm that arrives after the timeout but within the grace decides
// the answer: 202, not a 503 for an event that was stored.
func TestConfirmWithinTheGraceIsAccepted(t *testing.T) {
	h := newHarness(t, "")
	// 100ms, not less: the first publish opens the confirm channel within
	// the timeout, and on a loaded host 1ms was too short for that (the
	// warm-up was answered 503).
	h.handler.ingest.ConfirmTimeout = 100 * time.Millisecond
	h.handler.ingest.ConfirmGrace = time.Minute
	warm := []byte(`{"id":"evt_warm","type":"invoice.paid"}`)
	if code, _, resp := h.post(warm, stripeSign(warm, time.Now(), secret)); code != http.StatusAccepted {
		t.Fatalf("first webhook answered %d %s", code, resp)
	}
	body := []byte(`{"id":"evt_grace","type":"invoice.paid"}`)
	h.proxy.Freeze()
	// Thawed well after the timeout (a later thaw only makes the grace
	// matter more).
	thawed := time.AfterFunc(time.Second, h.proxy.Thaw)
	defer thawed.Stop()
	if code, _, resp := h.post(body, stripeSign(body, time.Now(), secret)); code != http.StatusAccepted {
		t.Fatalf("webhook confirmed within the grace answered %d %s, want 202", code, resp)
	}
	h.waitCount(2)
}
