package publish

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/rabbit"
)

func TestValidID(t *testing.T) {
	for _, id := range []string{"evt_1", "a", strings.Repeat("x", MaxIDLen), "stripe:evt_1", "550e8400-e29b-41d4-a716-446655440000", "~!@#$%^&*()"} {
		if err := ValidID(id); err != nil {
			t.Errorf("ValidID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", "a b", "a\r\nb", "a\tb", "a/b", "\x7f", "é", strings.Repeat("x", MaxIDLen+1)} {
		if err := ValidID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidID(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

func TestValidSource(t *testing.T) {
	for _, s := range []string{"app", "stripe", "a", "shop-1_x", strings.Repeat("s", MaxSourceLen)} {
		if err := ValidSource(s); err != nil {
			t.Errorf("ValidSource(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "-a", "_a", "A", "a.b", "a b", "a*", strings.Repeat("s", MaxSourceLen+1)} {
		if err := ValidSource(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidSource(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

// FuzzEncode: whatever Encode accepts fits every AMQP field and reads back
// as the same event; whatever it refuses is ErrInvalid. It never panics.
func FuzzEncode(f *testing.F) {
	f.Add("acme", "stripe", "evt_1", "invoice.paid", "")
	f.Add("acme", "app", "a\r\nb", "user.created", "s")
	f.Add("t", strings.Repeat("s", 63), strings.Repeat("i", 128), strings.Repeat("t", 200), "")
	f.Add("t", "app", "x", "#.*", "subject")
	f.Fuzz(func(t *testing.T, tenant, source, id, typ, subject string) {
		key, msg, err := Encode(Event{Tenant: tenant, Source: source, ID: id, Type: typ, Subject: subject, ContentType: "application/json", Body: []byte("{}")})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if err := rabbit.CheckPublishing(rabbit.EventsExchange, key, msg); err != nil {
			t.Fatalf("accepted event does not fit AMQP: %v", err)
		}
		if strings.ContainsAny(id, " \r\n\t/") || strings.ContainsAny(key, "*#") {
			t.Fatalf("accepted id %q / key %q", id, key)
		}
		ev, err := cloudevent.FromPublishing(msg)
		if err != nil {
			t.Fatalf("encoded event does not decode: %v", err)
		}
		if ev.GetId() != id || ev.GetSource() != source || ev.GetType() != typ || ev.GetTenant() != tenant {
			t.Fatalf("round trip changed the event: %+v", ev)
		}
	})
}

// recorder is a Confirmer that keeps what it was given and can fail.
type recorder struct {
	mu   sync.Mutex
	keys []string
	msgs []amqp.Publishing
	fail error
}

func (r *recorder) Publish(_ context.Context, exchange, key string, msg amqp.Publishing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.keys = append(r.keys, key)
	r.msgs = append(r.msgs, msg)
	return nil
}

func testRedis(t *testing.T) (redis.UniversalClient, string) {
	t.Helper()
	u := os.Getenv("HOOKYARD_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	prefix := fmt.Sprintf("test:publish:%d", time.Now().UnixNano())
	t.Cleanup(func() {
		keys, _ := rdb.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
		rdb.Close()
	})
	return rdb, prefix
}

// The id is remembered only after the confirm, per (tenant, source, id),
// for the publisher's memory; a failed publish leaves it free to retry.
func TestPublishDedupe(t *testing.T) {
	rdb, prefix := testRedis(t)
	rec := &recorder{}
	ids := dedupe.New(rdb, prefix+":ids")
	p := New(rec, ids, NewOwners(rdb, prefix), Config{})
	ctx := context.Background()
	ev := Event{Tenant: "acme", Source: "app", ID: "e1", Type: "user.created", Body: []byte("{}")}

	rec.fail = errors.New("broker down")
	if _, err := p.Publish(ctx, ev); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("failed publish: %v, want ErrUnavailable", err)
	}
	rec.fail = nil
	if res, err := p.Publish(ctx, ev); err != nil || res.Duplicate || res.RoutingKey != "app.user.created" {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if res, err := p.Publish(ctx, ev); err != nil || !res.Duplicate {
		t.Fatalf("repeat: %+v %v", res, err)
	}
	other := ev
	other.Source = "billing"
	if res, err := p.PublishInternal(ctx, other); err != nil || res.Duplicate {
		t.Fatalf("same id, other source: %+v %v", res, err)
	}
	if len(rec.keys) != 2 {
		t.Fatalf("%d publishes, want 2", len(rec.keys))
	}
	ttl := rdb.TTL(ctx, IDKey(ids, "acme", "app", "e1")).Val()
	if ttl < DefaultRemember-time.Minute {
		t.Fatalf("id remembered for %v, want %v", ttl, DefaultRemember)
	}
	if rec.msgs[0].Headers[cloudevent.HeaderTenant] != "acme" {
		t.Fatalf("no tenant header: %v", rec.msgs[0].Headers)
	}
}

// sourceCases are who may publish under which source, given the records
// the tests store: "shop" is globex's webhook source, "stripe" acme's,
// "broken" an unreadable record.
var sourceCases = []struct {
	tenant, source string
	ok             bool
}{
	{"acme", "app", true},
	{"acme", "orders", true},
	{"acme", "hookyard", false},
	{"acme", "shop", false},
	{"globex", "shop", true},
	{"acme", "stripe", true},
	{"globex", "stripe", false},
	{"globex", "github", false},
	{"acme", "broken", false},
}

func TestCheckSource(t *testing.T) {
	rdb, prefix := testRedis(t)
	o := NewOwners(rdb, prefix)
	ctx := context.Background()
	rdb.Set(ctx, SourceKey(prefix, "shop"), `{"tenant":"globex","source":{}}`, 0)
	rdb.Set(ctx, SourceKey(prefix, "stripe"), `{"tenant":"acme","source":{}}`, 0)
	rdb.Set(ctx, SourceKey(prefix, "broken"), `not json`, 0)
	for _, c := range sourceCases {
		err := o.CheckSource(ctx, c.tenant, c.source)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrSourceNotAllowed)) {
			t.Errorf("%s as %q: %v", c.tenant, c.source, err)
		}
	}
}

// roundTrips records the keys each round trip to Redis names.
type roundTrips struct {
	mu    sync.Mutex
	trips [][]string
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.record([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.record(cmds)
		return next(ctx, cmds)
	}
}

func (r *roundTrips) record(cmds []redis.Cmder) {
	var args []string
	for _, c := range cmds {
		for _, a := range c.Args() {
			if s, ok := a.(string); ok {
				args = append(args, s)
			}
		}
	}
	r.mu.Lock()
	r.trips = append(r.trips, args)
	r.mu.Unlock()
}

// tripWith returns the index of the first round trip naming key, or -1.
func (r *roundTrips) tripWith(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, args := range r.trips {
		for _, a := range args {
			if a == key {
				return i
			}
		}
	}
	return -1
}

// TestPublishInternalReadsTheOwnerWithTheClaim: the source's owner is read
// in the round trip that claims the event id, not in one of its own
// before it (one Redis round trip fewer per POST /v1/events and
// SendMessage), and the answers are CheckSource's.
func TestPublishInternalReadsTheOwnerWithTheClaim(t *testing.T) {
	rdb, prefix := testRedis(t)
	trips := &roundTrips{}
	rdb.AddHook(trips)
	ctx := context.Background()
	rdb.Set(ctx, SourceKey(prefix, "shop"), `{"tenant":"globex","source":{}}`, 0)
	rdb.Set(ctx, SourceKey(prefix, "stripe"), `{"tenant":"acme","source":{}}`, 0)
	rdb.Set(ctx, SourceKey(prefix, "broken"), `not json`, 0)
	rec := &recorder{}
	ids := dedupe.New(rdb, prefix+":ids")
	p := New(rec, ids, NewOwners(rdb, prefix), Config{})

	ev := Event{Tenant: "acme", Source: "orders", ID: "e1", Type: "order.created", Body: []byte("{}")}
	if _, err := p.PublishInternal(ctx, ev); err != nil {
		t.Fatal(err)
	}
	owner, claim := trips.tripWith(SourceKey(prefix, "orders")), trips.tripWith(IDKey(ids, "acme", "orders", "e1"))
	if owner < 0 || claim < 0 || owner != claim {
		t.Fatalf("owner read in round trip %d, id claimed in round trip %d; want one round trip for both", owner, claim)
	}

	for i, c := range sourceCases {
		ev := Event{Tenant: c.tenant, Source: c.source, ID: fmt.Sprintf("c%d", i), Type: "x.y", Body: []byte("{}")}
		_, err := p.PublishInternal(ctx, ev)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrSourceNotAllowed)) {
			t.Errorf("%s as %q: %v", c.tenant, c.source, err)
		}
		if err != nil {
			// A refused event leaves its id free: nothing was published.
			if n, _ := rdb.Exists(ctx, IDKey(ids, c.tenant, c.source, ev.ID)).Result(); n != 0 {
				// The claim is given back after the answer; wait for it.
				if err := ids.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				if n, _ := rdb.Exists(ctx, IDKey(ids, c.tenant, c.source, ev.ID)).Result(); n != 0 {
					t.Errorf("%s as %q: refused, but its id stays claimed", c.tenant, c.source)
				}
			}
		}
	}
	if len(rec.keys) != 5 {
		t.Fatalf("%d events published, want 5 (the first and the four allowed)", len(rec.keys))
	}
}
