package bench

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// collect must keep failures out of the rate and transport errors out of
// the latencies, or a failing server would look fast.
func TestCollectSeparatesFailures(t *testing.T) {
	out := []outcome{
		{status: 202, lat: 1 * time.Millisecond},
		{status: 202, lat: 3 * time.Millisecond},
		{status: 503, lat: 2 * time.Millisecond},
		{status: 0, err: errors.New("connection refused")},
	}
	s := collect(Summary{Elapsed: time.Second}, out, len(out))
	if s.Sent != 4 || s.OK != 2 || s.Non2xx != 1 || s.Errors != 1 {
		t.Fatalf("counts = sent %d ok %d non2xx %d errors %d, want 4 2 1 1", s.Sent, s.OK, s.Non2xx, s.Errors)
	}
	if s.Rate != 2 {
		t.Errorf("rate = %v, want 2 (only 2xx count)", s.Rate)
	}
	if s.Max != 3*time.Millisecond || s.P50 != 2*time.Millisecond {
		t.Errorf("p50 %v max %v, want 2ms and 3ms", s.P50, s.Max)
	}
	if s.FirstErr != "connection refused" || !s.Failed() {
		t.Errorf("first error %q failed %v", s.FirstErr, s.Failed())
	}
}

// The open loop must keep its schedule when the server is slow: requests
// are started on time (not after the previous answer), and the latency of a
// request includes the time it spent waiting for a free slot.
func TestOpenLoopMeasuresFromSchedule(t *testing.T) {
	slow := func(ctx context.Context, _ int) (int, error) {
		time.Sleep(20 * time.Millisecond)
		return 202, nil
	}
	// 200/s for 100ms: 20 requests, 5ms apart; with one slot each waits
	// for its predecessors, so the last is ~20*20ms-95ms late.
	s, err := OpenLoop(context.Background(), "t", 200, 100*time.Millisecond, 1, slow)
	if err != nil {
		t.Fatal(err)
	}
	if s.Sent != 20 || s.OK != 20 {
		t.Fatalf("sent %d ok %d, want 20", s.Sent, s.OK)
	}
	if s.Max < 250*time.Millisecond {
		t.Errorf("max latency %v: queueing behind the slow server was not counted", s.Max)
	}
}

func TestPayloadIsSizedValidJSON(t *testing.T) {
	b := Payload("abcd1234", 42)
	if len(b) != BodySize {
		t.Fatalf("payload is %d bytes, want %d", len(b), BodySize)
	}
	var ev struct{ ID, Type string }
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.ID != "evt_abcd1234_0000000042" || ev.Type != EventType {
		t.Errorf("id %q type %q", ev.ID, ev.Type)
	}
}

func TestStripeSignature(t *testing.T) {
	// Reference value computed independently:
	// printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_x
	got := StripeSignature("whsec_x", []byte("{}"), time.Unix(1700000000, 0))
	want := "t=1700000000,v1=be8cb8325f2202445260a855532f967e30ad2a9394ce28da66ee02880ddcb661"
	if got != want {
		t.Errorf("signature %q, want %q", got, want)
	}
}
