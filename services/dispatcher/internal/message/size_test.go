package message

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// A message waiting for its retry is the dispatcher's commonest record.
// Redis keeps a small hash as one listpack; one value over
// hash-max-listpack-value (64 bytes by default) turns the whole hash into
// a hashtable of separate allocations, about twice the memory. Meta and
// delivery states are encoded to stay under that.
func TestPendingRetryRecordStaysListpack(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	if v := rdb.ConfigGet(ctx, "hash-max-listpack-value").Val()["hash-max-listpack-value"]; v != "" {
		if n, _ := strconv.Atoi(v); n < 64 {
			t.Skipf("hash-max-listpack-value is %d, below the default this test assumes", n)
		}
	}
	now := time.Now().UTC()
	m := &Message{
		ID: "evt_1NXWPTHxA4Ua4kPb0aA3fBqF", Source: "stripe-live", Type: "customer.subscription.updated",
		RoutingKey: "stripe-live.customer.subscription.updated", ContentType: "application/json",
		EventTime: now.Add(-1500 * time.Millisecond), CreateTime: now,
		Body: []byte(`{"type":"customer.subscription.updated","data":{"pad":"` + strings.Repeat("x", 900) + `"}}`),
	}
	eps := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	if _, _, err := s.RecordFor(ctx, "acme", m, eps); err != nil {
		t.Fatal(err)
	}
	key := s.msgKey("acme", m.ID)
	if enc := rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
		t.Errorf("new message: encoding %q, want listpack; fields %v", enc, fieldSizes(ctx, t, s, key))
	}
	for i, ep := range eps {
		o := Outcome{
			Attempt: &dispatcherv1.Attempt{EndpointId: ep, Number: 1, Time: timestamppb.New(now), Latency: durationpb.New(time.Millisecond),
				ErrorClass: "connect", Error: `Post "http://127.0.0.1:1/dead": dial tcp 127.0.0.1:1: connect: connection refused`},
			State: Delivery{Status: StatusRetrying, Attempts: 1 + i, Next: now.Add(time.Hour), Copy: uuid.NewString()},
			At:    now,
		}
		if err := s.Settle(ctx, "acme", m.ID, ep, o); err != nil {
			t.Fatal(err)
		}
	}
	if enc := rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
		t.Errorf("pending retries: encoding %q, want listpack; fields %v", enc, fieldSizes(ctx, t, s, key))
	}
	got, ds, err := s.Get(ctx, "acme", m.ID)
	if err != nil || got.Source != m.Source || got.RoutingKey != m.RoutingKey || !got.EventTime.Equal(m.EventTime) || string(got.Body) != string(m.Body) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if d := ds[eps[2]]; d.Status != StatusRetrying || d.Attempts != 3 || !d.Next.Equal(now.Add(time.Hour)) || d.Copy == "" {
		t.Errorf("delivery %+v", d)
	}
}

func fieldSizes(ctx context.Context, t *testing.T, s *Store, key string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for k, v := range s.rdb.HGetAll(ctx, key).Val() {
		out[k] = len(v)
	}
	return out
}

// Most messages get one attempt per endpoint, and a list costs some 110
// bytes more than a string holding the same entry (its quicklist and node
// headers). So a log of one attempt is a string, which becomes a list
// when a second attempt is logged; both read the same.
func TestOneAttemptLogIsAString(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	key := s.attKey("acme", "m")
	if _, _, err := s.RecordFor(ctx, "acme", newMessage("m"), []string{"ep_1"}); err != nil {
		t.Fatal(err)
	}
	for n := int32(1); n <= 3; n++ {
		if err := s.AddAttempt(ctx, "acme", "m", &dispatcherv1.Attempt{EndpointId: "ep_1", Number: n, StatusCode: 500 + n}); err != nil {
			t.Fatal(err)
		}
		want := "list"
		if n == 1 {
			want = "string"
		}
		if typ := rdb.Type(ctx, key).Val(); typ != want {
			t.Errorf("after %d attempts: the log is a %s, want a %s", n, typ, want)
		}
		checkTTL(t, rdb, key)
		atts, _, err := s.Attempts(ctx, "acme", "m", 10, "")
		if err != nil || len(atts) != int(n) || atts[n-1].GetStatusCode() != 500+n || atts[n-1].GetNumber() != n {
			t.Fatalf("after %d attempts: Attempts = %v, %v", n, atts, err)
		}
		if page, _, err := s.Attempts(ctx, "acme", "m", 1, encodeOffset(int(n-1))); err != nil || len(page) != 1 || page[0].GetStatusCode() != 500+n {
			t.Fatalf("after %d attempts: last page = %v, %v", n, page, err)
		}
		recent, _, err := s.Recent(ctx, "acme", 10, "")
		if err != nil || len(recent) != 1 || len(recent[0].GetDeliveries()) != 1 || recent[0].GetDeliveries()[0].GetLastAttempt().GetStatusCode() != 500+n {
			t.Fatalf("after %d attempts: Recent = %v, %v", n, recent, err)
		}
	}
}
