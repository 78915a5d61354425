package bench

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/sign"
)

// sinkPhase starts a sink with phase name and its endpoint 0, whose
// secret it returns; both end with the test.
func sinkPhase(t *testing.T, name string) (*Sink, *Phase, string) {
	t.Helper()
	s, err := StartSink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	p := s.NewPhase(name)
	t.Cleanup(func() { s.EndPhase(p) })
	secret, err := sign.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetEndpoint(0, secret, 0); err != nil {
		t.Fatal(err)
	}
	return s, p, secret
}

// The sink verifies signatures as a subscriber would: a request signed by
// the dispatcher's signer passes, a tampered body or another secret is
// counted as a bad signature.
func TestSinkVerifiesSignatures(t *testing.T) {
	s, p, secret := sinkPhase(t, "sig")
	other, err := sign.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	post := func(id, signWith string, body, sent []byte) {
		t.Helper()
		key, err := sign.ParseSecret(signWith)
		if err != nil {
			t.Fatal(err)
		}
		p.Sent(id, time.Now())
		req, err := http.NewRequest(http.MethodPost, s.URLFor(p, 0), bytes.NewReader(sent))
		if err != nil {
			t.Fatal(err)
		}
		sign.Headers(req.Header, [][]byte{key}, id, time.Now(), body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	post("good", secret, []byte(`{"a":1}`), []byte(`{"a":1}`))
	if st := p.Stats(); st.BadSig != 0 {
		t.Fatalf("a valid signature counted as bad: %+v", st)
	}
	post("tampered", secret, []byte(`{"a":1}`), []byte(`{"a":2}`))
	post("other-secret", other, []byte(`{"a":1}`), []byte(`{"a":1}`))
	if st := p.Stats(); st.BadSig != 2 {
		t.Fatalf("bad signatures counted %d, want 2", st.BadSig)
	}
}

// The floor consumer's receipt time reaches the sink in ConsumedHeader
// and becomes publish to consume; a request without it (the dispatcher's)
// adds nothing there.
func TestSinkRecordsConsumed(t *testing.T) {
	s, p, secret := sinkPhase(t, "consumed")
	key, err := sign.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now().Add(-time.Second)
	p.Sent("a", sent)
	p.Sent("b", sent)
	consumed := strconv.FormatInt(sent.Add(3*time.Millisecond).UnixNano(), 10)
	if err := floorPost(context.Background(), http.DefaultClient, s.URLFor(p, 0), [][]byte{key}, "a", "application/json", consumed, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, s.URLFor(p, 0), bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	sign.Headers(req.Header, [][]byte{key}, "b", time.Now(), []byte(`{}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	st := p.Stats()
	if len(st.Latencies) != 2 || st.BadSig != 0 {
		t.Fatalf("stats = %+v, want 2 valid arrivals", st)
	}
	if len(st.Consumed) != 1 || st.Consumed[0] != 3*time.Millisecond {
		t.Fatalf("Consumed = %v, want [3ms]", st.Consumed)
	}
}
