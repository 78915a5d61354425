// Package flow runs the suite's one promised flow end to end, through the
// four real binaries: a Stripe webhook, a trigger, a task that invalidates
// a cache key, a signed delivery and the task's completion callback.
package flow

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hookyard/hookyard/test/internal/sink"
	"github.com/hookyard/hookyard/test/internal/suite"
)

// wait is how long any hop may take on a slow, shared machine.
const wait = 90 * time.Second

func TestStripeWebhookThroughTheWholeSuite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()

	sub, err := sink.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	id := suite.NewID()
	tenant, key := "t"+id, "key-"+suite.RandHex(16)
	st, err := suite.Start(ctx, t.TempDir(), suite.Options{ID: id, Keys: map[string]string{tenant: key}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	defer func() {
		if t.Failed() {
			t.Log(st.Logs())
		}
	}()
	in, disp, cache, jobs := st.Ingress(), st.Dispatcher(), st.Cache(), st.Jobs()

	// A Stripe source on ingress.
	source, stripeSecret := "stripe-"+id, "whsec_"+suite.RandHex(16)
	must(t, in.JSON(ctx, "POST", "/v1/sources", key, map[string]any{
		"name": source, "provider": "stripe", "secrets": []string{stripeSecret},
	}, http.StatusOK, nil))

	// A cached customer that the task will invalidate.
	customer := "cus_" + suite.RandHex(6)
	must(t, cache.JSON(ctx, "POST", "/v1/namespaces", key, map[string]any{"name": "customers", "strategy": "cache_aside"}, http.StatusOK, nil))
	keyPath := "/v1/namespaces/customers/keys/" + url.PathEscape(customer)
	must(t, cache.JSON(ctx, "PUT", keyPath, key, map[string]any{"value": base64.StdEncoding.EncodeToString([]byte(`{"name":"Ada"}`)), "ttl": "3600s"}, http.StatusOK, nil))
	var got struct {
		Value []byte `json:"value"`
		Hit   bool   `json:"hit"`
	}
	must(t, cache.JSON(ctx, "GET", keyPath, key, nil, http.StatusOK, &got))
	if !got.Hit || string(got.Value) != `{"name":"Ada"}` {
		t.Fatalf("cached customer before the webhook: hit=%v value=%q", got.Hit, got.Value)
	}

	// The subscriber's endpoint on the dispatcher: the Stripe events and the
	// jobs service's completion events.
	var ep struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	must(t, disp.JSON(ctx, "POST", "/v1/endpoints", key, map[string]any{
		"url":        sub.URL("/hooks"),
		"eventTypes": []string{source + ".invoice.*", "hookyard.jobs.task.*"},
	}, http.StatusOK, &ep))
	must(t, sub.SetSecret("/hooks", ep.Secret))

	// The trigger: every paid invoice runs an http task that invalidates the
	// customer in the cache, and reports its end to a callback URL.
	callbackSecret := newSecret(t)
	must(t, sub.SetSecret("/callback", callbackSecret))
	var trig struct {
		ID string `json:"id"`
	}
	must(t, jobs.JSON(ctx, "POST", "/v1/triggers", key, map[string]any{
		"eventType": source + ".invoice.paid",
		"task": map[string]any{
			"name": "http",
			"args": map[string]any{
				"url":     cache.URL("/v1/namespaces/customers:invalidate"),
				"method":  "POST",
				"headers": map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json"},
				"body":    fmt.Sprintf(`{"keys":[%q]}`, customer),
			},
			"maxRetries":     5,
			"callbackUrl":    sub.URL("/callback"),
			"callbackSecret": callbackSecret,
		},
	}, http.StatusOK, &trig))

	// Hop 1: Stripe → ingress, acknowledged only once durable. The request
	// carries a W3C trace context, which must reach the subscriber.
	eventID := "evt_" + suite.RandHex(8)
	body := []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":"invoice.paid","data":{"object":{"id":"in_1","customer":%q}}}`, eventID, customer))
	traceID := suite.RandHex(16)
	code, resp, err := in.PostStripe(ctx, source, stripeSecret, body, "traceparent", "00-"+traceID+"-"+suite.RandHex(8)+"-01")
	must(t, err)
	if code != http.StatusAccepted {
		t.Fatalf("webhook: %d %s, want 202", code, resp)
	}
	// Stripe retries; the retry is acknowledged and not published again.
	code, resp, err = in.PostStripe(ctx, source, stripeSecret, body)
	must(t, err)
	var dup struct {
		ID        string `json:"id"`
		Duplicate bool   `json:"duplicate"`
	}
	if code != http.StatusOK || json.Unmarshal(resp, &dup) != nil || !dup.Duplicate || dup.ID != eventID {
		t.Fatalf("replayed webhook: %d %s, want 200 duplicate", code, resp)
	}

	// Hop 2: the trigger enqueued the task, which ran and succeeded.
	taskID := trig.ID + "-" + eventID
	var task struct {
		State    string `json:"state"`
		Attempts int    `json:"attempts"`
		Result   struct {
			Status int `json:"status"`
		} `json:"result"`
		CallbackState string `json:"callbackState"`
	}
	must(t, suite.Eventually(ctx, wait, func() error {
		code, b, err := jobs.Do(ctx, "GET", "/v1/tasks/"+url.PathEscape(taskID), key, nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("task %s: %d %s", taskID, code, b)
		}
		if err := json.Unmarshal(b, &task); err != nil {
			return err
		}
		if task.State != "succeeded" {
			return fmt.Errorf("task %s: %s", taskID, b)
		}
		return nil
	}))
	if task.Result.Status != http.StatusOK {
		t.Fatalf("task result status %d, want 200 from the cache's invalidate", task.Result.Status)
	}

	// Hop 3: the task's request invalidated the customer.
	code, resp, err = cache.Do(ctx, "GET", keyPath, key, nil)
	must(t, err)
	if code != http.StatusNotFound {
		t.Fatalf("cached customer after the task: %d %s, want 404", code, resp)
	}

	// Hop 4: the subscriber got the Stripe event, signed, byte for byte,
	// once under its webhook-id, though ingress received it twice.
	must(t, suite.Eventually(ctx, wait, func() error {
		if len(sub.Get(eventID)) == 0 {
			req, _, rej, why := sub.Stats()
			return fmt.Errorf("no delivery of %s (requests %d, refused %d: %s; accepted: %s)", eventID, req, rej, why, sub.IDs())
		}
		return nil
	}))
	d := sub.Get(eventID)[0]
	if d.Path != "/hooks" || string(d.Body) != string(body) {
		t.Fatalf("delivery of %s to %s: body %s, want the webhook's bytes %s", eventID, d.Path, d.Body, body)
	}
	// One trace from the webhook request to the delivery request: ingress →
	// AMQP headers → fan-out → task → outbound traceparent.
	if tp := strings.Split(d.Header.Get("traceparent"), "-"); len(tp) != 4 || tp[1] != traceID {
		t.Fatalf("delivery of %s carries traceparent %q, want trace id %s from the webhook request", eventID, d.Header.Get("traceparent"), traceID)
	}

	// Hop 5: the task's end reached its callback URL, signed with the
	// task's callback secret (the jobs service handed it to the
	// dispatcher, which delivered it), and the dispatcher delivered the
	// completion event to the endpoint.
	ended := func() func(map[string]any) bool {
		return func(m map[string]any) bool { return m["id"] == taskID && m["state"] == "succeeded" }
	}
	for _, path := range []string{"/callback", "/hooks"} {
		must(t, suite.Eventually(ctx, wait, func() error {
			for _, d := range sub.Find(ended()) {
				if d.Path == path {
					// The same trace goes on through the trigger, the task
					// and its completion: event → jobs → callback.
					if tp := strings.Split(d.Header.Get("traceparent"), "-"); len(tp) != 4 || tp[1] != traceID {
						return fmt.Errorf("completion of %s at %s carries traceparent %q, want trace id %s from the webhook request", taskID, path, d.Header.Get("traceparent"), traceID)
					}
					return nil
				}
			}
			req, _, rej, why := sub.Stats()
			return fmt.Errorf("no completion of %s at %s (requests %d, refused %d: %s; accepted: %s)", taskID, path, req, rej, why, sub.IDs())
		}))
	}

	// The callback went through the dispatcher: the task says so, and the
	// completion's message there has two deliveries, to the endpoint and
	// to the callback URL, both delivered.
	completion := taskID + ".succeeded.1"
	must(t, suite.Eventually(ctx, wait, func() error {
		if err := jobs.JSON(ctx, "GET", "/v1/tasks/"+url.PathEscape(taskID), key, nil, http.StatusOK, &task); err != nil {
			return err
		}
		if want := "handed to dispatcher as message " + completion; task.CallbackState != want {
			return fmt.Errorf("task %s: callback state %q, want %q", taskID, task.CallbackState, want)
		}
		var cm struct {
			Deliveries []struct {
				EndpointID string `json:"endpointId"`
				Status     string `json:"status"`
			} `json:"deliveries"`
		}
		if err := disp.JSON(ctx, "GET", "/v1/messages/"+url.PathEscape(completion), key, nil, http.StatusOK, &cm); err != nil {
			return err
		}
		if len(cm.Deliveries) != 2 || cm.Deliveries[0].Status != "delivered" || cm.Deliveries[1].Status != "delivered" {
			return fmt.Errorf("completion message %s: deliveries %+v, want two delivered", completion, cm.Deliveries)
		}
		return nil
	}))

	// The dispatcher's record agrees, and nothing was delivered twice.
	var msg map[string]any
	must(t, disp.JSON(ctx, "GET", "/v1/messages/"+url.PathEscape(eventID), key, nil, http.StatusOK, &msg))
	if n := len(sub.Get(eventID)); n != 1 {
		t.Fatalf("%s accepted %d times, want once", eventID, n)
	}
	_, _, rejected, why := sub.Stats()
	if rejected != 0 {
		t.Fatalf("%d requests failed Standard Webhooks verification; last: %s", rejected, why)
	}
	for _, s := range st.Services {
		must(t, s.Healthy(ctx))
	}
}

func newSecret(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
