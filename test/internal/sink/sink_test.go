package sink

import (
	"bytes"
	"net/http"
	"strconv"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The sink must refuse what a real subscriber refuses, or the end-to-end
// tests would accept unsigned deliveries.
func TestSinkAcceptsOnlyValidSignatures(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	if err := s.SetSecret("/hooks", secret); err != nil {
		t.Fatal(err)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"a":1}`)
	post := func(path, id string, at time.Time, payload []byte) int {
		t.Helper()
		sig, err := wh.Sign(id, at, body)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", s.URL(path), bytes.NewReader(payload))
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
		req.Header.Set("webhook-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		name, path, id string
		at             time.Time
		payload        []byte
		want           int
	}{
		{"valid", "/hooks", "msg_1", time.Now(), body, 204},
		{"same id again", "/hooks", "msg_1", time.Now(), body, 204},
		{"other bytes", "/hooks", "msg_2", time.Now(), []byte(`{"a":2}`), 401},
		{"stale", "/hooks", "msg_3", time.Now().Add(-time.Hour), body, 401},
		{"path without a secret", "/other", "msg_4", time.Now(), body, 401},
	} {
		if got := post(c.path, c.id, c.at, c.payload); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	if got := s.Counts(); len(got) != 1 || got["msg_1"] != 2 {
		t.Fatalf("accepted %v, want msg_1 twice and nothing else", got)
	}
	if _, _, rejected, _ := s.Stats(); rejected != 3 {
		t.Fatalf("refused %d, want 3", rejected)
	}
}

// A count-only sink still counts every webhook-id it accepts, repeats
// included, but keeps no delivery: a soak relies on both.
func TestCountOnlySinkCountsWithoutKeeping(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.CountOnly()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	if err := s.SetSecret("/hooks", secret); err != nil {
		t.Fatal(err)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"a":1}`)
	for _, id := range []string{"msg_1", "msg_2", "msg_1"} {
		at := time.Now()
		sig, err := wh.Sign(id, at, body)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", s.URL("/hooks"), bytes.NewReader(body))
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
		req.Header.Set("webhook-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 204 {
			t.Fatalf("%s: %d, want 204", id, resp.StatusCode)
		}
	}
	if ids, repeats := s.Accepted(); ids != 2 || repeats != 1 {
		t.Fatalf("accepted %d ids with %d repeats, want 2 and 1", ids, repeats)
	}
	if !s.Has("msg_2") || s.Has("msg_3") {
		t.Fatalf("Has(msg_2)=%v Has(msg_3)=%v, want true and false", s.Has("msg_2"), s.Has("msg_3"))
	}
	if got := s.Get("msg_1"); len(got) != 0 {
		t.Fatalf("count-only sink kept %d deliveries of msg_1", len(got))
	}
}
