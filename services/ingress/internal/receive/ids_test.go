package receive

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/testwait"
)

// A signed body whose id would break a derived field (the webhook-id header
// of every delivery, the path of GET /v1/messages/{id}) is refused at the
// door with a reason, not accepted and then dead-lettered or unreachable.
func TestUnusableEventIDIsRefused(t *testing.T) {
	h := newHarness(t, "")
	for _, c := range []struct{ name, id string }{
		{"CR LF", `evt_1\r\nX-Injected: yes`},
		{"slash", `evt/1`},
		{"space", `evt 1`},
		{"too long", strings.Repeat("e", publish.MaxIDLen+1)},
	} {
		body := []byte(`{"id":"` + c.id + `","type":"invoice.paid"}`)
		code, _, resp := h.post(body, stripeSign(body, time.Now(), secret))
		if code != http.StatusBadRequest || !strings.Contains(resp, "id") {
			t.Errorf("%s: status %d %s, want 400 naming the id", c.name, code, resp)
		}
	}
	// The longest allowed id passes.
	body := []byte(`{"id":"` + strings.Repeat("e", publish.MaxIDLen) + `","type":"invoice.paid"}`)
	if code, _, resp := h.post(body, stripeSign(body, time.Now(), secret)); code != http.StatusAccepted {
		t.Fatalf("longest id: status %d %s", code, resp)
	}
	h.waitCount(1)
}

// An id is remembered at least as long as the dispatcher keeps messages:
// a reuse is answered as a duplicate at the door rather than accepted and
// then taken for a replay downstream.
func TestIDRememberedForTheMessageRetention(t *testing.T) {
	h := newHarness(t, "")
	body := []byte(`{"id":"evt_ttl","type":"invoice.paid"}`)
	if code, _, resp := h.post(body, stripeSign(body, time.Now(), secret)); code != http.StatusAccepted {
		t.Fatalf("status %d %s", code, resp)
	}
	// The id is marked published after the answer, so wait for that.
	ids := dedupe.New(h.rdb, "test:"+h.source+":dedupe")
	var ttl time.Duration
	testwait.Eventually(t, 10*time.Second, "the id marked published", func() bool {
		v, _ := h.rdb.Get(context.Background(), ids.Key(h.tenant, h.source, "evt_ttl")).Result()
		ttl = h.rdb.TTL(context.Background(), ids.Key(h.tenant, h.source, "evt_ttl")).Val()
		return v == "done"
	})
	if ttl < publish.DefaultRemember-time.Minute {
		t.Fatalf("id remembered for %v, want at least %v", ttl, publish.DefaultRemember)
	}
}
