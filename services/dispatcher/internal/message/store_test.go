package message

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

const retention = time.Hour

func newStore(t *testing.T) (*Store, redis.UniversalClient) {
	t.Helper()
	t.Parallel()
	prefix := testenv.KeyPrefix(testenv.ID())
	rdb := testenv.Redis(t, prefix)
	return New(rdb, prefix, retention), rdb
}

// checkTTL fails unless key expires within the retention period (and not
// much sooner).
func checkTTL(t *testing.T, rdb redis.UniversalClient, key string) {
	t.Helper()
	ttl := rdb.PTTL(context.Background(), key).Val()
	if ttl <= retention-time.Minute || ttl > retention {
		t.Errorf("%s: TTL %v, want about %v", key, ttl, retention)
	}
}

func newMessage(id string) *Message {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &Message{
		ID: id, Source: "stripe", Type: "invoice.paid", RoutingKey: "stripe.invoice.paid",
		ContentType: "application/json", EventTime: now.Add(-time.Second), CreateTime: now,
		Body: []byte("{\"a\": 1,  \"raw\": \"\xff\xfe\"}\n"), // exact bytes, not even valid UTF-8
	}
}

func TestRecordAndGetAreTenantScoped(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	m := newMessage("evt_1")

	created, err := s.Record(ctx, "acme", m)
	if err != nil || !created {
		t.Fatalf("Record = %v, %v; want a new message", created, err)
	}
	checkTTL(t, rdb, s.msgKey("acme", m.ID))

	// A second copy of the event keeps the first.
	dup := newMessage("evt_1")
	dup.Type, dup.Body = "changed", []byte("{}")
	if created, err := s.Record(ctx, "acme", dup); err != nil || created {
		t.Fatalf("Record of a duplicate = %v, %v; want not new", created, err)
	}

	got, ds, err := s.Get(ctx, "acme", "evt_1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Body, m.Body) {
		t.Errorf("body %q, want the exact bytes %q", got.Body, m.Body)
	}
	if got.ID != m.ID || got.Type != m.Type || got.RoutingKey != m.RoutingKey || got.ContentType != m.ContentType ||
		!got.EventTime.Equal(m.EventTime) || !got.CreateTime.Equal(m.CreateTime) {
		t.Errorf("got %+v, want %+v", got, m)
	}
	if len(ds) != 0 {
		t.Errorf("deliveries %v before any", ds)
	}

	// The same id is another message for another tenant.
	for _, c := range []struct{ tenant, id string }{{"globex", "evt_1"}, {"acme", "evt_2"}, {"acme", ""}, {"acme", strings.Repeat("x", 256)}} {
		if _, _, err := s.Get(ctx, c.tenant, c.id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s, %.10q): %v, want ErrNotFound", c.tenant, c.id, err)
		}
	}
	if created, err := s.Record(ctx, "globex", newMessage("evt_1")); err != nil || !created {
		t.Fatalf("Record for another tenant = %v, %v; want new", created, err)
	}
}

func TestDeliveryStatus(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Record(ctx, "acme", newMessage("m")); err != nil {
		t.Fatal(err)
	}
	if err := s.InitDeliveries(ctx, "acme", "m", []string{"ep1", "ep2"}); err != nil {
		t.Fatal(err)
	}
	next := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	if err := s.SetDelivery(ctx, "acme", "m", "ep1", Delivery{Status: StatusRetrying, Attempts: 2, Next: next}); err != nil {
		t.Fatal(err)
	}
	// A replayed fan-out does not reset a delivery under way.
	if err := s.InitDeliveries(ctx, "acme", "m", []string{"ep1", "ep3"}); err != nil {
		t.Fatal(err)
	}
	_, ds, err := s.Get(ctx, "acme", "m")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Delivery{
		"ep1": {Status: StatusRetrying, Attempts: 2, Next: next},
		"ep2": {Status: StatusPending},
		"ep3": {Status: StatusPending},
	}
	if len(ds) != len(want) {
		t.Fatalf("deliveries %v, want %v", ds, want)
	}
	for ep, w := range want {
		if d := ds[ep]; d.Status != w.Status || d.Attempts != w.Attempts || !d.Next.Equal(w.Next) {
			t.Errorf("%s: %+v, want %+v", ep, d, w)
		}
	}
	// Recording the message again (a replayed event) reports the
	// deliveries under way (ep1; ep3 is only pending, so its task may
	// never have gone out), records ep4 as pending and changes nothing
	// else.
	created, has, err := s.RecordFor(ctx, "acme", newMessage("m"), []string{"ep1", "ep4", "ep3"})
	if err != nil {
		t.Fatal(err)
	}
	if created || !has["ep1"] || len(has) != 1 {
		t.Errorf("RecordFor = %v, %v; want not created, ep1 under way", created, has)
	}
	want["ep4"] = Delivery{Status: StatusPending}
	_, ds2, _ := s.Get(ctx, "acme", "m")
	for ep, w := range want {
		if d := ds2[ep]; d.Status != w.Status || d.Attempts != w.Attempts || len(ds2) != len(want) {
			t.Errorf("after RecordFor %s: %+v, want %+v (all: %v)", ep, d, w, ds2)
		}
	}
	// A delivery retrying after its first attempt is not under way
	// either: the fan-out's own first attempt may have settled it and lost
	// its retry task, which the replayed first attempt publishes again.
	first := Delivery{Status: StatusRetrying, Attempts: 1, Next: next}
	if err := s.SetDelivery(ctx, "acme", "m", "ep2", first); err != nil {
		t.Fatal(err)
	}
	if _, has, err := s.RecordFor(ctx, "acme", newMessage("m"), []string{"ep1", "ep2"}); err != nil || !has["ep1"] || has["ep2"] {
		t.Errorf("RecordFor = %v, %v; want ep1 under way, ep2 (retrying after its first attempt) not", has, err)
	}
	if d, err := s.Delivery(ctx, "acme", "m", "ep2"); err != nil || d.Status != first.Status || d.Attempts != 1 || !d.Next.Equal(next) {
		t.Errorf("Delivery(ep2) = %+v, %v; want %+v unchanged", d, err, first)
	}
	if _, err := s.Delivery(ctx, "acme", "m", "ep9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delivery of an endpoint without one: %v, want ErrNotFound", err)
	}
	if created, has, _ := s.RecordFor(ctx, "globex", newMessage("m"), []string{"ep1"}); !created || len(has) != 0 {
		t.Errorf("another tenant's message: created %v, deliveries %v; want created, none", created, has)
	}
	// A new message is recorded with its deliveries pending, in the same
	// write.
	if _, _, err := s.RecordFor(ctx, "acme", newMessage("m2"), []string{"ep1", "ep2"}); err != nil {
		t.Fatal(err)
	}
	if _, ds3, _ := s.Get(ctx, "acme", "m2"); len(ds3) != 2 || ds3["ep1"].Status != StatusPending || ds3["ep2"].Status != StatusPending {
		t.Errorf("new message's deliveries %v, want ep1 and ep2 pending", ds3)
	}
}

func TestAttemptLog(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		if err := s.AddAttempt(ctx, "acme", "m", &dispatcherv1.Attempt{Number: int32(i), StatusCode: 500, ErrorClass: "http_5xx"}); err != nil {
			t.Fatal(err)
		}
	}
	checkTTL(t, rdb, s.attKey("acme", "m"))

	var numbers []int32
	token, pages := "", 0
	for {
		page, next, err := s.Attempts(ctx, "acme", "m", 2, token)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page) > 2 {
			t.Fatalf("page of %d, asked for 2", len(page))
		}
		for _, a := range page {
			numbers = append(numbers, a.GetNumber())
		}
		if next == "" {
			break
		}
		token = next
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if fmt.Sprint(numbers) != "[1 2 3 4 5]" || pages != 3 {
		t.Fatalf("attempts %v in %d pages, want [1 2 3 4 5] oldest first in 3", numbers, pages)
	}
	if page, next, err := s.Attempts(ctx, "acme", "m", 10, ""); err != nil || len(page) != 5 || next != "" {
		t.Fatalf("one page of 10: %d attempts, next %q, %v", len(page), next, err)
	}
	if page, _, _ := s.Attempts(ctx, "globex", "m", 10, ""); len(page) != 0 {
		t.Fatalf("another tenant sees %d attempts", len(page))
	}
	for _, bad := range []string{"!!", token64("x1"), token64("o-1"), token64("o"), token64("o1x")} {
		if _, _, err := s.Attempts(ctx, "acme", "m", 2, bad); !errors.Is(err, ErrBadToken) {
			t.Errorf("token %q: %v, want ErrBadToken", bad, err)
		}
	}
}

// TestAttemptSnippet: the stored response is at most 4 KiB and always
// recorded, whatever bytes the subscriber sent.
func TestAttemptSnippet(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	cases := map[string]string{
		"long":            strings.Repeat("x", 3*MaxSnippet),
		"exactly 4 KiB":   strings.Repeat("y", MaxSnippet),
		"cut inside rune": strings.Repeat("z", MaxSnippet-1) + "é and more",
		"short binary":    "\x89PNG\r\n\x1a\n\x00\xff\xfe",
		"binary at cap":   strings.Repeat("\xff", MaxSnippet),
	}
	for name, body := range cases {
		if err := s.AddAttempt(ctx, "acme", name, &dispatcherv1.Attempt{Number: 1, ResponseSnippet: body}); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		got, _, err := s.Attempts(ctx, "acme", name, 10, "")
		if err != nil || len(got) != 1 {
			t.Errorf("%s: %d attempts, %v", name, len(got), err)
			continue
		}
		sn := got[0].GetResponseSnippet()
		if len(sn) > MaxSnippet || !utf8.ValidString(sn) {
			t.Errorf("%s: stored %d bytes (valid UTF-8 %v), want at most %d of UTF-8", name, len(sn), utf8.ValidString(sn), MaxSnippet)
		}
		if sn == "" {
			t.Errorf("%s: nothing stored", name)
		}
		if utf8.ValidString(body) && (!strings.HasPrefix(body, sn) || len(sn) < min(len(body), MaxSnippet)-utf8.UTFMax) {
			t.Errorf("%s: stored %d bytes %.20q…, want the first %d bytes of the response", name, len(sn), sn, min(len(body), MaxSnippet))
		}
	}
}

// deadLetterAll dead-letters (id, ep) pairs one millisecond apart, oldest
// first, ending at now.
func deadLetterAll(t *testing.T, s *Store, tenant string, pairs [][2]string) {
	t.Helper()
	start := time.Now().Add(-time.Duration(len(pairs)) * time.Millisecond)
	for i, p := range pairs {
		if _, err := s.Record(context.Background(), tenant, newMessage(p[0])); err != nil {
			t.Fatal(err)
		}
		last := &dispatcherv1.Attempt{EndpointId: p[1], Number: 8, StatusCode: 400, ResponseSnippet: "bad \xff request"}
		if err := s.DeadLetter(context.Background(), tenant, p[0], p[1], last, "test", start.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
}

// listDeadLetters pages through every dead letter with the given page size.
func listDeadLetters(t *testing.T, s *Store, tenant, ep string, size int) []string {
	t.Helper()
	var out []string
	token := ""
	for range 20 {
		page, next, err := s.DeadLetters(context.Background(), tenant, ep, size, token)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > size {
			t.Fatalf("page of %d, asked for %d", len(page), size)
		}
		for _, dl := range page {
			out = append(out, dl.GetMessageId()+"@"+dl.GetEndpointId())
		}
		if next == "" {
			return out
		}
		token = next
	}
	t.Fatal("paging does not end")
	return nil
}

func TestDeadLetters(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	deadLetterAll(t, s, "acme", [][2]string{{"m1", "ep1"}, {"m2", "ep2"}, {"m3", "ep1"}, {"m1", "ep2"}, {"m4", "ep1"}})
	checkTTL(t, rdb, s.dlKey("acme"))
	checkTTL(t, rdb, s.dleKey("acme", "ep1"))

	if got := fmt.Sprint(listDeadLetters(t, s, "acme", "", 2)); got != "[m4@ep1 m1@ep2 m3@ep1 m2@ep2 m1@ep1]" {
		t.Errorf("all dead letters, newest first: %s", got)
	}
	if got := fmt.Sprint(listDeadLetters(t, s, "acme", "ep1", 1)); got != "[m4@ep1 m3@ep1 m1@ep1]" {
		t.Errorf("dead letters of ep1: %s", got)
	}
	if got := listDeadLetters(t, s, "globex", "", 10); len(got) != 0 {
		t.Errorf("another tenant sees %v", got)
	}
	page, _, err := s.DeadLetters(ctx, "acme", "ep2", 1, "")
	if err != nil || len(page) != 1 || page[0].GetLastAttempt().GetStatusCode() != 400 || page[0].GetTime() == nil {
		t.Fatalf("dead letter record %v, %v", page, err)
	}
	if _, _, err := s.DeadLetters(ctx, "acme", "", 2, "not a token"); !errors.Is(err, ErrBadToken) {
		t.Errorf("bad token: %v", err)
	}

	// A dead letter recorded after a resend began (by the resent task
	// itself) is not cleared by that resend.
	if err := s.ClearDeadLetter(ctx, "acme", "m1", "ep2", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(listDeadLetters(t, s, "acme", "ep2", 10)); got != "[m1@ep2 m2@ep2]" {
		t.Errorf("ep2 after clearing older entries only: %s", got)
	}
	// Resending clears it everywhere.
	if err := s.ClearDeadLetter(ctx, "acme", "m1", "ep2", time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(listDeadLetters(t, s, "acme", "", 10)); got != "[m4@ep1 m3@ep1 m2@ep2 m1@ep1]" {
		t.Errorf("after clearing m1@ep2: %s", got)
	}
	if got := listDeadLetters(t, s, "acme", "ep2", 10); fmt.Sprint(got) != "[m2@ep2]" {
		t.Errorf("ep2 after clearing m1@ep2: %v", got)
	}

	// An event id may hold spaces (providers choose them); it is listed whole.
	deadLetterAll(t, s, "initech", [][2]string{{"evt with spaces", "ep1"}})
	if got := fmt.Sprint(listDeadLetters(t, s, "initech", "", 10)); got != "[evt with spaces@ep1]" {
		t.Errorf("dead letter of an id with spaces: %s", got)
	}

	// Entries older than the retention period are trimmed.
	old := time.Now().Add(-2 * retention)
	if err := s.DeadLetter(ctx, "acme", "m2", "ep9", nil, "test", old); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetter(ctx, "acme", "m3", "ep9", nil, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(listDeadLetters(t, s, "acme", "ep9", 10)); got != "[m3@ep9]" {
		t.Errorf("ep9 with an entry past retention: %s", got)
	}
}

func TestHeldAndRecoverable(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	now := time.Now()
	for i, id := range []string{"h1", "h2", "h3"} {
		if err := s.Hold(ctx, "acme", id, "ep", now.Add(time.Duration(i-2)*time.Hour/2)); err != nil {
			t.Fatal(err)
		}
	}
	checkTTL(t, rdb, s.heldKey("acme", "ep"))
	deadLetterAll(t, s, "acme", [][2]string{{"h3", "ep"}, {"d1", "ep"}, {"d2", "other"}})

	got, err := s.Recoverable(ctx, "acme", "ep", now.Add(-45*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[h2 h3 d1]" {
		t.Errorf("recoverable since 45 min ago: %v, want [h2 h3 d1] (h1 is older, h3 once)", got)
	}
	if got, _ := s.Recoverable(ctx, "globex", "ep", time.Time{}); len(got) != 0 {
		t.Errorf("another tenant recovers %v", got)
	}
	if err := s.ClearDeadLetter(ctx, "acme", "h2", "ep", now); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Recoverable(ctx, "acme", "ep", now.Add(-45*time.Minute)); fmt.Sprint(got) != "[h3 d1]" {
		t.Errorf("after clearing h2: %v", got)
	}
}

func token64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestPageTokens(t *testing.T) {
	for _, n := range []int{0, 1, 50, 1 << 20} {
		if got, err := decodeOffset(encodeOffset(n)); err != nil || got != n {
			t.Errorf("offset %d round-trips to %d, %v", n, got, err)
		}
	}
	if n, err := decodeOffset(""); err != nil || n != 0 {
		t.Errorf("empty token: %d, %v", n, err)
	}
}

func TestSnippet(t *testing.T) {
	cases := []struct{ in, want string }{
		{"ok", "ok"},
		{"\xffabc\xfe\xfd", "\uFFFDabc\uFFFD"},
		{strings.Repeat("z", MaxSnippet-1) + "é", strings.Repeat("z", MaxSnippet-1)},
		{strings.Repeat("z", MaxSnippet-2) + "é!", strings.Repeat("z", MaxSnippet-2) + "é"},
		{strings.Repeat("é", MaxSnippet), strings.Repeat("é", MaxSnippet/2)},
	}
	for _, c := range cases {
		if got := Snippet(c.in); got != c.want {
			t.Errorf("Snippet(%.12q… %d bytes) = %.12q… %d bytes, want %.12q… %d bytes", c.in, len(c.in), got, len(got), c.want, len(c.want))
		}
	}
}

// failNth makes the nth command (or pipeline) sent through a client fail
// before it reaches Redis, like a connection lost or a process killed
// between two writes.
type failNth struct{ n, seen int }

func (f *failNth) fail() error {
	f.seen++
	if f.seen == f.n {
		return errors.New("connection lost")
	}
	return nil
}

func (f *failNth) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *failNth) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := f.fail(); err != nil {
			return err
		}
		return next(ctx, cmd)
	}
}

func (f *failNth) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := f.fail(); err != nil {
			return err
		}
		return next(ctx, cmds)
	}
}

// TestRecordIsAllOrNothing: whichever write of Record is lost, recording
// the event again (its redelivery) leaves the whole message with its TTL.
func TestRecordIsAllOrNothing(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	for n := 1; n <= 3; n++ {
		flaky := testenv.Redis(t, s.prefix)
		if err := flaky.Ping(ctx).Err(); err != nil { // connect before counting
			t.Fatal(err)
		}
		flaky.AddHook(&failNth{n: n})
		m := newMessage(fmt.Sprintf("m%d", n))
		_, _ = New(flaky, s.prefix, retention).Record(ctx, "acme", m)
		if _, err := s.Record(ctx, "acme", m); err != nil {
			t.Fatal(err)
		}
		got, _, err := s.Get(ctx, "acme", m.ID)
		if err != nil || !bytes.Equal(got.Body, m.Body) {
			t.Fatalf("write %d lost: message %v, %v; want the body %q", n, got, err, m.Body)
		}
		checkTTL(t, rdb, s.msgKey("acme", m.ID))
	}
}

func TestMarkDelivered(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	if _, err := s.Record(ctx, "acme", newMessage("m")); err != nil {
		t.Fatal(err)
	}
	if err := s.InitDeliveries(ctx, "acme", "m", []string{"ep1", "ep2"}); err != nil {
		t.Fatal(err)
	}
	// A pending delivery (its state was lost) becomes delivered...
	if err := s.MarkDelivered(ctx, "acme", "m", "ep1", 1); err != nil {
		t.Fatal(err)
	}
	// ...a delivered one keeps the attempt count it was written with.
	if err := s.SetDelivery(ctx, "acme", "m", "ep2", Delivery{Status: StatusDelivered, Attempts: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDelivered(ctx, "acme", "m", "ep2", 1); err != nil {
		t.Fatal(err)
	}
	_, ds, err := s.Get(ctx, "acme", "m")
	if err != nil {
		t.Fatal(err)
	}
	if d := ds["ep1"]; d.Status != StatusDelivered || d.Attempts != 1 {
		t.Errorf("ep1: %+v, want delivered after 1 attempt", d)
	}
	if d := ds["ep2"]; d.Status != StatusDelivered || d.Attempts != 3 {
		t.Errorf("ep2: %+v, want delivered after 3 attempts (unchanged)", d)
	}
	// A message that has expired is not brought back as a bare hash.
	if err := s.MarkDelivered(ctx, "acme", "gone", "ep1", 1); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, s.msgKey("acme", "gone")).Val(); n != 0 {
		t.Errorf("MarkDelivered created %s", s.msgKey("acme", "gone"))
	}
}

func TestSettleWritesAttemptAndState(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	if _, err := s.Record(ctx, "acme", newMessage("m")); err != nil {
		t.Fatal(err)
	}
	a := &dispatcherv1.Attempt{EndpointId: "ep1", Number: 1, StatusCode: 400, ResponseSnippet: "no\xff"}
	other := s.prefix + ":other"
	op := func(ctx context.Context, pipe redis.Pipeliner) { pipe.Set(ctx, other, "1", time.Minute) }
	o := Outcome{Attempt: a, State: Delivery{Status: StatusFailed, Attempts: 1}, DeadLetter: "permanent", At: time.Now()}
	if err := s.Settle(ctx, "acme", "m", "ep1", o, op); err != nil {
		t.Fatal(err)
	}
	atts, _, err := s.Attempts(ctx, "acme", "m", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(atts) != 1 || atts[0].GetStatusCode() != 400 || atts[0].GetResponseSnippet() != "no\uFFFD" {
		t.Fatalf("attempts %v, want the one settled, its snippet made valid UTF-8", atts)
	}
	checkTTL(t, rdb, s.attKey("acme", "m"))
	_, ds, err := s.Get(ctx, "acme", "m")
	if err != nil {
		t.Fatal(err)
	}
	if d := ds["ep1"]; d.Status != StatusFailed || d.Attempts != 1 {
		t.Errorf("ep1: %+v, want failed after 1 attempt", d)
	}
	dls, _, err := s.DeadLetters(ctx, "acme", "ep1", 10, "")
	if err != nil || len(dls) != 1 || dls[0].GetReason() != "permanent" || dls[0].GetLastAttempt().GetStatusCode() != 400 {
		t.Errorf("dead letters %v %v, want the one settled", dls, err)
	}
	if rdb.Exists(ctx, other).Val() != 1 {
		t.Error("the other store's write was not sent")
	}
}

// An op whose command answers nil (a script that found nothing, as
// marking a deleted endpoint failing does) does not fail the write.
func TestSettleTakesNilRepliesForAnswers(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Record(ctx, "acme", newMessage("m")); err != nil {
		t.Fatal(err)
	}
	op := func(ctx context.Context, pipe redis.Pipeliner) { pipe.Get(ctx, s.prefix+":missing") }
	o := Outcome{Attempt: &dispatcherv1.Attempt{EndpointId: "ep1", Number: 1, StatusCode: 503}, State: Delivery{Status: StatusRetrying, Attempts: 1}, At: time.Now()}
	if err := s.Settle(ctx, "acme", "m", "ep1", o, op); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	if _, ds, err := s.Get(ctx, "acme", "m"); err != nil || ds["ep1"].Status != StatusRetrying {
		t.Fatalf("delivery %+v, %v; want retrying", ds["ep1"], err)
	}
}

// A delivery that outlives its message (a retry schedule longer than the
// retention) must not bring the message's key back without a TTL.
func TestNoWritesToExpiredMessages(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	if err := s.SetDelivery(ctx, "acme", "expired", "ep1", Delivery{Status: StatusRetrying, Attempts: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeadLetter(ctx, "acme", "expired", "ep1", nil, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, s.msgKey("acme", "expired")).Val(); n != 0 {
		t.Fatalf("%s was created by writes after its expiry (TTL %v)", s.msgKey("acme", "expired"), rdb.PTTL(ctx, s.msgKey("acme", "expired")).Val())
	}
	// A message that exists still takes them.
	if _, err := s.Record(ctx, "acme", newMessage("m")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDelivery(ctx, "acme", "m", "ep1", Delivery{Status: StatusRetrying, Attempts: 3}); err != nil {
		t.Fatal(err)
	}
	if _, ds, err := s.Get(ctx, "acme", "m"); err != nil || ds["ep1"].Attempts != 3 {
		t.Fatalf("delivery of an existing message: %v, %v", ds, err)
	}
}

func TestRecordForRefusesAnotherSourcesID(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Record(ctx, "acme", newMessage("evt-1")); err != nil {
		t.Fatal(err)
	}
	again := newMessage("evt-1") // same source: a replay
	if created, _, err := s.RecordFor(ctx, "acme", again, []string{"ep1"}); err != nil || created {
		t.Fatalf("replay: created %v, %v; want not created, no error", created, err)
	}
	other := newMessage("evt-1")
	other.Source = "github"
	if _, _, err := s.RecordFor(ctx, "acme", other, []string{"ep1"}); !errors.Is(err, ErrIDTaken) {
		t.Fatalf("another source's event with the same id: %v, want ErrIDTaken", err)
	}
	m, _, err := s.Get(ctx, "acme", "evt-1")
	if err != nil || m.Source != "stripe" {
		t.Fatalf("the first message changed: %+v, %v", m, err)
	}
}
