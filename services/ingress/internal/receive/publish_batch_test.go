package receive

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
)

// sendWebhook posts a signed Stripe webhook with id and type and returns
// the status, or 0 if no answer came.
func (h *harness) sendWebhook(client *http.Client, id, typ string) int {
	body := fmt.Appendf(nil, `{"id":%q,"type":%q}`, id, typ)
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/webhooks/"+h.source, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", stripeSign(body, time.Now(), secret))
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// drainIDs takes every message from queue and returns their ids.
func (h *harness) drainIDs(queue string) map[string]int {
	h.t.Helper()
	seen := make(map[string]int)
	for {
		d, ok, err := h.ch.Get(queue, true)
		if err != nil {
			h.t.Fatal(err)
		}
		if !ok {
			return seen
		}
		seen[d.MessageId]++
	}
}

// Publishes of concurrent webhooks share socket writes and confirm
// batches; a nacked publish among them fails only its own webhook, with
// 503, and gives its id back, so the provider's retry is not told "in
// progress". Its neighbours in the batch are accepted and on the bus.
func TestNackedPublishInABatchFailsOnlyItsWebhook(t *testing.T) {
	h := newHarness(t, "")
	// Every event of type full.* is routed to a queue that refuses
	// messages: the broker nacks them.
	full := rabbittest.UniqueName(t, "full")
	if _, err := h.ch.QueueDeclare(full, false, true, false, false, amqp.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = h.ch.QueueDelete(full, false, false, false) })
	if err := h.ch.QueueBind(full, h.source+".full.#", h.topo.Events, false, nil); err != nil {
		t.Fatal(err)
	}

	const n = 120
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			typ := "invoice.paid"
			if i%3 == 0 {
				typ = "full.refused"
			}
			codes[i] = h.sendWebhook(client, fmt.Sprintf("evt_%d", i), typ)
		})
	}
	wg.Wait()
	for i, code := range codes {
		want := http.StatusAccepted
		if i%3 == 0 {
			want = http.StatusServiceUnavailable
		}
		if code != want {
			t.Errorf("webhook %d: status %d, want %d", i, code, want)
		}
	}
	seen := h.drainIDs(h.queue)
	for i := range n {
		if id := fmt.Sprintf("evt_%d", i); i%3 != 0 && seen[id] != 1 {
			t.Errorf("accepted %s is on the bus %d times, want 1", id, seen[id])
		}
	}
	// The refused ones' claims were given back: a retry is refused by the
	// broker again (503), not answered "in progress" (409).
	for i := 0; i < n; i += 3 {
		if code := h.sendWebhook(client, fmt.Sprintf("evt_%d", i), "full.refused"); code != http.StatusServiceUnavailable {
			t.Errorf("retry of refused webhook %d: status %d, want 503", i, code)
		}
	}
}

// The broker connection cut while concurrent webhooks are being
// published: every webhook answered 2xx is on the bus, the others were
// answered 503 and are accepted when retried.
func TestBrokerCutMidBatchLosesNoAcceptedWebhook(t *testing.T) {
	h := newHarness(t, "")
	const workers, perWorker = 32, 40
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var mu sync.Mutex
	codes := make(map[string]int)
	var sent sync.WaitGroup
	started := make(chan struct{})
	var once sync.Once
	for w := range workers {
		sent.Go(func() {
			for i := range perWorker {
				id := fmt.Sprintf("evt_%d_%d", w, i)
				code := h.sendWebhook(client, id, "invoice.paid")
				mu.Lock()
				codes[id] = code
				if len(codes) == workers*perWorker/4 {
					once.Do(func() { close(started) })
				}
				mu.Unlock()
			}
		})
	}
	<-started
	// Frozen first, so the publishes in flight are written and wait for
	// confirms that the cut then loses.
	h.proxy.Freeze()
	time.Sleep(300 * time.Millisecond) // let publishes pile up; not a timing assertion
	h.proxy.Cut()
	h.proxy.Thaw()
	h.proxy.Restore()
	sent.Wait()

	failed := 0
	for id, code := range codes {
		switch code {
		case http.StatusAccepted:
		case http.StatusServiceUnavailable:
			failed++
			// The provider retries until accepted.
			deadline := time.Now().Add(15 * time.Second)
			for h.sendWebhook(client, id, "invoice.paid")/100 != 2 {
				if time.Now().After(deadline) {
					t.Fatalf("retry of %s never accepted", id)
				}
				time.Sleep(50 * time.Millisecond)
			}
		default:
			t.Errorf("%s: status %d, want 202 or 503", id, code)
		}
	}
	if failed == 0 {
		t.Fatal("the cut failed no webhook: nothing was in flight, the test proved nothing")
	}
	time.Sleep(300 * time.Millisecond) // let the last deliveries land in the queue count
	seen := h.drainIDs(h.queue)
	for id := range codes {
		if seen[id] == 0 {
			t.Errorf("%s was answered 2xx (or retried until 2xx) but is not on the bus", id)
		}
	}
	t.Logf("%d webhooks, %d failed by the cut and retried, %d messages on the bus", len(codes), failed, len(seen))
}
