package message

import (
	"bytes"
	"context"
	"crypto/rand"
	"slices"
	"strings"
	"testing"

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
