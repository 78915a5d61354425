package message

import (
	"bytes"
	"context"
	"crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// A compressible body is stored compressed and read back byte for byte;
// one that does not compress, or a short one, is stored as it is.
func TestBodyIsStoredCompressedWhenItShrinks(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	random := make([]byte, 2048)
	_, _ = rand.Read(random)
	cases := map[string]struct {
		body  []byte
		field string
	}{
		"json":   {[]byte(`{"type":"invoice.paid","data":{"object":{"lines":[` + strings.Repeat(`{"amount":1200,"currency":"eur"},`, 40) + `{}]}}}`), bodyZ},
		"random": {random, bodyRaw},
		"short":  {[]byte(`{"a":1}`), bodyRaw},
	}
	for name, c := range cases {
		m := newMessage("evt_" + name)
		m.Body = c.body
		if _, err := s.Record(ctx, "acme", m); err != nil {
			t.Fatal(err)
		}
		fields := rdb.HKeys(ctx, s.msgKey("acme", m.ID)).Val()
		if !slices.Contains(fields, c.field) || slices.Contains(fields, map[string]string{bodyZ: bodyRaw, bodyRaw: bodyZ}[c.field]) {
			t.Errorf("%s: fields %v, want the body in %q only", name, fields, c.field)
		}
		got, _, err := s.Get(ctx, "acme", m.ID)
		if err != nil || !bytes.Equal(got.Body, c.body) {
			t.Errorf("%s: Get = %v; body equal %v", name, err, err == nil && bytes.Equal(got.Body, c.body))
		}
	}
}

// Records written before bodies were compressed and attempts logged as
// JSON stay readable.
func TestEarlierEncodingsAreRead(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	key := s.msgKey("acme", "old")
	if err := rdb.HSet(ctx, key, "meta", `{"source":"stripe","type":"t","key":"k","create_time":"2026-01-02T03:04:05Z"}`, bodyRaw, `{"old":true}`).Err(); err != nil {
		t.Fatal(err)
	}
	old := &dispatcherv1.Attempt{EndpointId: "ep_1", Number: 1, Time: timestamppb.Now(), StatusCode: 500}
	v, _ := protojson.Marshal(old)
	if err := rdb.RPush(ctx, s.attKey("acme", "old"), v).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAttempt(ctx, "acme", "old", &dispatcherv1.Attempt{EndpointId: "ep_1", Number: 2, Time: timestamppb.Now(), StatusCode: 200}); err != nil {
		t.Fatal(err)
	}
	m, _, err := s.Get(ctx, "acme", "old")
	if err != nil || string(m.Body) != `{"old":true}` {
		t.Fatalf("Get = %v, %v; want the raw body", m, err)
	}
	atts, _, err := s.Attempts(ctx, "acme", "old", 10, "")
	if err != nil || len(atts) != 2 || atts[0].GetStatusCode() != 500 || atts[1].GetStatusCode() != 200 || atts[1].GetNumber() != 2 {
		t.Fatalf("Attempts = %v, %v; want the JSON one, then the binary one", atts, err)
	}
	// A page that starts after the JSON entry still numbers by it.
	atts, _, err = s.Attempts(ctx, "acme", "old", 1, encodeOffset(1))
	if err != nil || len(atts) != 1 || atts[0].GetNumber() != 2 {
		t.Fatalf("second page = %v, %v; want attempt 2", atts, err)
	}
}

func TestMetaAndDeliveryRoundTrip(t *testing.T) {
	now := time.Now()
	metas := map[string]*Message{
		"usual":    {Source: "stripe", Type: "invoice.paid", RoutingKey: "stripe.invoice.paid", ContentType: "application/json", EventTime: now.Add(-time.Second), CreateTime: now},
		"explicit": {Orig: strings.Repeat("o", 300), Source: "s", Type: "t", RoutingKey: "other.key", ContentType: "", CreateTime: now},
		"later":    {Source: "s", Type: "t", RoutingKey: "", ContentType: "text/plain", EventTime: now.Add(time.Hour), CreateTime: now},
		"zero":     {Source: "s", Type: "t", RoutingKey: "s.t", ContentType: "application/json"},
	}
	for name, m := range metas {
		var got Message
		v := encodeMeta(m)
		if err := decodeMeta(string(v), &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Orig != m.Orig || got.Source != m.Source || got.Type != m.Type || got.RoutingKey != m.RoutingKey || got.ContentType != m.ContentType ||
			!got.EventTime.Equal(m.EventTime) || !got.CreateTime.Equal(m.CreateTime) {
			t.Errorf("%s: got %+v, want %+v", name, got, *m)
		}
	}
	for _, d := range []Delivery{
		{Status: StatusPending},
		{Status: StatusRetrying, Attempts: 1, Next: now, Copy: "8c0c7f0e-2f43-4f5e-9d3b-1b8f1e0a6c11"},
		{Status: StatusFailed, Attempts: 300},
		{Status: StatusDelivered, Attempts: 2},
		{Status: StatusHeld, Attempts: 7, Next: now.Add(-time.Hour)},
		{Status: "someday", Attempts: 1},
	} {
		got, err := decodeDelivery(string(encodeDelivery(d)))
		if err != nil || got.Status != d.Status || got.Attempts != d.Attempts || !got.Next.Equal(d.Next) || got.Copy != d.Copy {
			t.Errorf("%+v: got %+v, %v", d, got, err)
		}
	}
	if _, err := decodeDelivery("\x01"); err == nil {
		t.Error("a truncated state decoded")
	}
}

// A long meta (an event stored under another id keeps the one it was
// sent with) and a body over 64 bytes are split into chunks; both read
// back whole everywhere.
func TestChunkedMetaAndBodyReadBack(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	m := newMessage("evt_chunked")
	m.Orig = strings.Repeat("sent-as-", 20)
	m.Body = []byte(strings.Repeat(`{"n":1}`, 40)) // raw: too short to compress
	m.Body = append(m.Body, make([]byte, 300)...)
	random := make([]byte, 300)
	_, _ = rand.Read(random)
	m.Body = append(m.Body, random...)
	if _, _, err := s.RecordFor(ctx, "acme", m, []string{"ep_1"}); err != nil {
		t.Fatal(err)
	}
	fields := rdb.HKeys(ctx, s.msgKey("acme", m.ID)).Val()
	if !slices.Contains(fields, metaChunk(1)) || !slices.Contains(fields, chunkField(1)) {
		t.Fatalf("fields %v, want meta and body in chunks", fields)
	}
	got, _, err := s.Get(ctx, "acme", m.ID)
	if err != nil || got.Orig != m.Orig || !bytes.Equal(got.Body, m.Body) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	// A replay under the same id is recognised as the same message.
	created, _, err := s.RecordFor(ctx, "acme", newMessageAs(m), []string{"ep_1"})
	if err != nil || created {
		t.Fatalf("replay: created %v, %v", created, err)
	}
	page, _, err := s.Recent(ctx, "acme", 10, "")
	if err != nil || len(page) != 1 || page[0].GetSource() != m.Source || page[0].GetType() != m.Type {
		t.Fatalf("Recent = %v, %v", page, err)
	}
}

func newMessageAs(m *Message) *Message {
	c := *m
	return &c
}

// Delivery states written as JSON by earlier versions are read, and the
// record script still tells one under way from one pending.
func TestEarlierDeliveryStatesAreRead(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	key := s.msgKey("acme", "old")
	if err := rdb.HSet(ctx, key,
		"meta", `{"source":"stripe","type":"t","key":"k","create_time":"2026-01-02T03:04:05Z"}`, bodyRaw, `{}`,
		"d:ep_done", `{"status":"delivered","attempts":2}`,
		"d:ep_first", `{"status":"retrying","attempts":1,"next":"2026-01-02T03:04:10Z"}`,
		"d:ep_pending", `{"status":"pending","attempts":0}`).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Expire(ctx, key, retention)
	m := &Message{ID: "old", Source: "stripe", Type: "t", RoutingKey: "k"}
	_, under, err := s.RecordFor(ctx, "acme", m, []string{"ep_done", "ep_first", "ep_pending", "ep_new"})
	if err != nil || !under["ep_done"] || under["ep_first"] || under["ep_pending"] || under["ep_new"] {
		t.Fatalf("RecordFor: under way %v, %v; want ep_done alone", under, err)
	}
	d, err := s.Delivery(ctx, "acme", "old", "ep_first")
	if err != nil || d.Status != StatusRetrying || d.Attempts != 1 || d.Next.IsZero() {
		t.Fatalf("Delivery = %+v, %v", d, err)
	}
	if err := s.MarkDelivered(ctx, "acme", "old", "ep_done", 9); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Delivery(ctx, "acme", "old", "ep_done"); d.Attempts != 2 {
		t.Errorf("MarkDelivered overwrote a delivered state: %+v", d)
	}
	if err := s.MarkDelivered(ctx, "acme", "old", "ep_first", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDelivered(ctx, "acme", "old", "ep_first", 9); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Delivery(ctx, "acme", "old", "ep_first"); d.Status != StatusDelivered || d.Attempts != 2 {
		t.Errorf("after MarkDelivered: %+v, want delivered after 2", d)
	}
	_, ds, err := s.Get(ctx, "acme", "old")
	if err != nil || len(ds) != 4 || ds["ep_new"].Status != StatusPending {
		t.Fatalf("Get: %v, %v", ds, err)
	}
}
