package message

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/redis/go-redis/v9"
)

func TestRecentListsTheTenantsMessagesNewestFirstWithLastAttempts(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Millisecond)
	for i := range 3 {
		m := newMessage(fmt.Sprintf("evt_%d", i))
		m.CreateTime = base.Add(time.Duration(i) * time.Second)
		if _, _, err := s.RecordFor(ctx, "acme", m, []string{"ep_a", "ep_b"}); err != nil {
			t.Fatal(err)
		}
	}
	checkTTL(t, rdb, s.recentKey("acme"))
	other := newMessage("evt_other")
	if _, err := s.Record(ctx, "globex", other); err != nil {
		t.Fatal(err)
	}
	for n, code := range []int32{500, 503} {
		if err := s.AddAttempt(ctx, "acme", "evt_2", &dispatcherv1.Attempt{EndpointId: "ep_a", Number: int32(n + 1), StatusCode: code, ResponseSnippet: fmt.Sprint("try ", n+1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetDelivery(ctx, "acme", "evt_2", "ep_a", Delivery{Status: StatusRetrying, Attempts: 2, Next: base.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	// A duplicate does not add a second entry.
	if _, err := s.Record(ctx, "acme", newMessage("evt_1")); err != nil {
		t.Fatal(err)
	}

	page, next, err := s.Recent(ctx, "acme", 2, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].GetId() != "evt_2" || page[1].GetId() != "evt_1" || next == "" {
		t.Fatalf("first page %v, next %q; want evt_2, evt_1 and a token", ids(page), next)
	}
	top := page[0]
	if top.GetSource() != "stripe" || top.GetType() != "invoice.paid" || top.GetData() != nil || !top.GetCreateTime().AsTime().Equal(base.Add(2*time.Second)) {
		t.Errorf("message %v", top)
	}
	if len(top.GetDeliveries()) != 2 {
		t.Fatalf("deliveries %v, want ep_a and ep_b", top.GetDeliveries())
	}
	a, b := top.GetDeliveries()[0], top.GetDeliveries()[1]
	if a.GetEndpointId() != "ep_a" || a.GetStatus() != StatusRetrying || a.GetAttempts() != 2 || a.GetNextAttemptTime() == nil {
		t.Errorf("ep_a delivery %v", a)
	}
	if la := a.GetLastAttempt(); la.GetStatusCode() != 503 || la.GetResponseSnippet() != "try 2" {
		t.Errorf("ep_a last attempt %v, want the 503", la)
	}
	if b.GetEndpointId() != "ep_b" || b.GetStatus() != StatusPending || b.GetLastAttempt() != nil {
		t.Errorf("ep_b delivery %v, want pending with no attempt", b)
	}

	rest, next, err := s.Recent(ctx, "acme", 2, next)
	if err != nil || len(rest) != 1 || rest[0].GetId() != "evt_0" || next != "" {
		t.Fatalf("second page %v, %q, %v; want evt_0 alone", ids(rest), next, err)
	}
	if got, _, _ := s.Recent(ctx, "globex", 50, ""); len(got) != 1 || got[0].GetId() != "evt_other" {
		t.Errorf("globex sees %v, want only its own message", ids(got))
	}
	if _, _, err := s.Recent(ctx, "acme", 2, "garbage"); err != ErrBadToken {
		t.Errorf("bad token: %v", err)
	}
}

func ids(ms []*dispatcherv1.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.GetId()
	}
	return out
}

// Messages indexed in the sorted set of earlier versions are listed after
// those of the stream, while it lasts; tokens of earlier versions (offsets
// into it) still work.
func TestRecentReadsTheEarlierIndexAfterTheStream(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	base := time.Now().Add(-time.Minute)
	for i := range 3 {
		id := fmt.Sprintf("old_%d", i)
		if _, err := s.Record(ctx, "acme", newMessage(id)); err != nil {
			t.Fatal(err)
		}
		rdb.ZAdd(ctx, s.legacyRecentKey("acme"), redis.Z{Score: float64(base.Add(time.Duration(i) * time.Second).UnixMilli()), Member: id})
	}
	rdb.Del(ctx, s.recentKey("acme"))
	for i := range 2 {
		if _, err := s.Record(ctx, "acme", newMessage(fmt.Sprintf("new_%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var all []string
	token := ""
	for range 10 {
		page, next, err := s.Recent(ctx, "acme", 2, token)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ids(page)...)
		if token = next; token == "" {
			break
		}
	}
	if want := []string{"new_1", "new_0", "old_2", "old_1", "old_0"}; !slices.Equal(all, want) {
		t.Errorf("listed %v, want %v", all, want)
	}
	page, _, err := s.Recent(ctx, "acme", 1, encodeOffset(1))
	if err != nil || len(page) != 1 || page[0].GetId() != "old_1" {
		t.Errorf("an earlier token: %v, %v; want old_1", ids(page), err)
	}
	if _, _, err := s.Recent(ctx, "acme", 2, streamToken+"bm90IGFuIGlk"); err != ErrBadToken {
		t.Errorf("a token with no stream id: %v", err)
	}
}

// The index of recent messages costs a few bytes an id, not the hundred
// and more of a sorted set's entry (MEMORY USAGE is exact with SAMPLES 0;
// the bound has twice the margin of what a stream takes).
func TestRecentIndexIsCompact(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	const n = 300
	for i := range n {
		if _, err := s.Record(ctx, "acme", newMessage(fmt.Sprintf("evt_%08d", i))); err != nil {
			t.Fatal(err)
		}
	}
	used, err := rdb.MemoryUsage(ctx, s.recentKey("acme"), 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("index: %d bytes per message", used/n)
	if per := used / n; per > 64 {
		t.Errorf("index: %d bytes per message, want at most 64", per)
	}
}
