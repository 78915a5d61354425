package jobs_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/services/dispatcher/dispatchertest"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

const serviceKey = "jobs-test-service-key"

// With a dispatcher configured, a task's callback is handed over to it:
// the dispatcher signs it with the task's secret, retries a failing
// subscriber on its schedule, dead-letters it and lists the attempts and
// the dead letter under the task's tenant; GetTask says where it went, and
// a resend reaches the subscriber once it is back.
func TestCallbackThroughDispatcherRetriesAndDeadLetters(t *testing.T) {
	t.Parallel()
	d := dispatchertest.Start(t, dispatchertest.Options{ServiceKey: serviceKey})
	secret, err := sign.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := sign.ParseSecret(secret)
	var up atomic.Bool
	var signed, hits atomic.Int32
	var body atomic.Value
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hits.Add(1)
		unix, _ := strconv.ParseInt(r.Header.Get(sign.HeaderTimestamp), 10, 64)
		if r.Header.Get(sign.HeaderSignature) == sign.Sign([][]byte{key}, r.Header.Get(sign.HeaderID), time.Unix(unix, 0), b) {
			signed.Add(1)
		}
		body.Store(b)
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer cb.Close()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("pong")) }))
	defer target.Close()

	e := jobstest.Start(t, jobstest.Options{DispatcherAddr: d.GRPCAddr, ServiceKey: serviceKey})
	code, task := e.REST(t, e.Acme, "POST", "/v1/tasks",
		`{"name":"http","args":{"url":"`+target.URL+`"},"callbackUrl":"`+cb.URL+`/done","callbackSecret":"`+secret+`"}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, task)
	}
	id := task["id"].(string)
	msgID := id + ".succeeded.1"

	var cbState string
	jobstest.WaitFor(t, 30*time.Second, "callback handed over", func() bool {
		got, err := e.Replicas[0].Tasks.GetTask(e.Acme.Ctx(context.Background()), &jobsv1.GetTaskRequest{Id: id})
		cbState = got.GetCallbackState()
		return err == nil && strings.HasPrefix(cbState, "handed to dispatcher")
	})
	if cbState != "handed to dispatcher as message "+msgID {
		t.Errorf("callback state %q", cbState)
	}

	// The dispatcher's API, as the task's tenant.
	tctx := auth.WithTenant(context.Background(), e.Acme.Name)
	msgs := d.Dispatcher.Messages
	var dl *dispatcherv1.DeadLetter
	jobstest.WaitFor(t, 60*time.Second, "a dead letter", func() bool {
		res, err := msgs.ListDeadLetters(tctx, &dispatcherv1.ListDeadLettersRequest{})
		if err != nil || len(res.GetDeadLetters()) == 0 {
			return false
		}
		dl = res.GetDeadLetters()[0]
		return true
	})
	if dl.GetMessageId() != msgID || dl.GetLastAttempt().GetStatusCode() != http.StatusServiceUnavailable {
		t.Errorf("dead letter %v", dl)
	}
	atts, err := msgs.ListMessageAttempts(tctx, &dispatcherv1.ListMessageAttemptsRequest{Id: msgID})
	if err != nil {
		t.Fatal(err)
	}
	// dispatchertest's schedule has three retries after the first attempt.
	if n := len(atts.GetAttempts()); n != 4 || signed.Load() != 4 || hits.Load() != 4 {
		t.Errorf("%d attempts recorded, %d requests of which %d correctly signed; want 4", n, hits.Load(), signed.Load())
	}
	var got map[string]any
	if err := json.Unmarshal(body.Load().([]byte), &got); err != nil || got["id"] != id || got["state"] != "succeeded" {
		t.Errorf("callback body %s", body.Load())
	}
	// Another tenant of the dispatcher does not see it.
	if _, err := msgs.GetMessage(auth.WithTenant(context.Background(), e.Other.Name), &dispatcherv1.GetMessageRequest{Id: msgID}); err == nil {
		t.Error("another tenant sees the callback")
	}

	up.Store(true)
	if _, err := msgs.ResendMessage(tctx, &dispatcherv1.ResendMessageRequest{Id: msgID, EndpointId: dl.GetEndpointId()}); err != nil {
		t.Fatal(err)
	}
	jobstest.WaitFor(t, 30*time.Second, "the resent callback delivered", func() bool {
		m, err := msgs.GetMessage(tctx, &dispatcherv1.GetMessageRequest{Id: msgID})
		return err == nil && len(m.GetDeliveries()) == 1 && m.GetDeliveries()[0].GetStatus() == "delivered"
	})
}

// A dispatcher that is down delays the hand-over; once it is up the
// callback is handed over and delivered, never lost.
func TestCallbackHandOverOutlastsDispatcherOutage(t *testing.T) {
	t.Parallel()
	// Nothing listens on this address until the dispatcher starts.
	addr := jobstest.FreeAddr(t)
	delivered := make(chan struct{}, 4)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { delivered <- struct{}{} }))
	defer cb.Close()
	secret, _ := sign.NewSecret()
	e := jobstest.Start(t, jobstest.Options{DispatcherAddr: addr, ServiceKey: serviceKey})
	code, task := e.REST(t, e.Acme, "POST", "/v1/tasks",
		`{"name":"http","args":{"url":"`+cb.URL+`/work"},"callbackUrl":"`+cb.URL+`/done","callbackSecret":"`+secret+`"}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, task)
	}
	id := task["id"].(string)
	<-delivered // the task's own request
	jobstest.WaitFor(t, 30*time.Second, "a failed hand-over", func() bool {
		got, err := e.Replicas[0].Tasks.GetTask(e.Acme.Ctx(context.Background()), &jobsv1.GetTaskRequest{Id: id})
		return err == nil && strings.HasPrefix(got.GetCallbackState(), "handing to dispatcher, retrying")
	})
	dispatchertest.Start(t, dispatchertest.Options{ServiceKey: serviceKey, GRPCAddr: addr})
	select {
	case <-delivered:
	case <-time.After(90 * time.Second):
		t.Fatal("the callback never arrived")
	}
	jobstest.WaitFor(t, 30*time.Second, "callback handed over", func() bool {
		got, err := e.Replicas[0].Tasks.GetTask(e.Acme.Ctx(context.Background()), &jobsv1.GetTaskRequest{Id: id})
		return err == nil && strings.HasPrefix(got.GetCallbackState(), "handed to dispatcher")
	})
}
