package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

func testRecords(t *testing.T) *deliveredRecords {
	t.Helper()
	prefix := testenv.KeyPrefix(testenv.ID())
	return &deliveredRecords{rdb: testenv.Redis(t, prefix), prefix: prefix, keep: time.Hour}
}

// A claimed delivery is busy for every other copy until it is recorded,
// then done; a claim that was never recorded expires, so a consumer that
// died before sending does not lose the delivery.
func TestDeliveredRecordsClaimThenRecord(t *testing.T) {
	ctx := context.Background()
	r := testRecords(t)
	states := func(event string, n int) []claimState {
		t.Helper()
		c, err := r.claim(ctx, event, n)
		if err != nil {
			t.Fatal(err)
		}
		return c.states
	}
	if got := states("ev1", 2); got[0] != claimSend || got[1] != claimSend {
		t.Fatalf("first claim = %v; want both to send", got)
	}
	if got := states("ev1", 2); got[0] != claimBusy || got[1] != claimBusy {
		t.Fatalf("claim while another copy sends = %v; want both busy", got)
	}
	if err := r.record(ctx, &claims{event: "ev1"}, []int{1}); err != nil {
		t.Fatal(err)
	}
	if got := states("ev1", 2); got[0] != claimBusy || got[1] != claimDone {
		t.Fatalf("claim after endpoint 1 was recorded = %v; want busy, done", got)
	}
	if ttl := r.rdb.TTL(ctx, r.key("ev1", 1)).Val(); ttl < 59*time.Minute {
		t.Fatalf("delivered record kept for %v; want the retention, an hour", ttl)
	}

	r.lease = 50 * time.Millisecond
	states("ev2", 1)
	time.Sleep(100 * time.Millisecond)
	if got := states("ev2", 1); got[0] != claimSend {
		t.Fatalf("claim after an unrecorded claim expired = %v; want send", got)
	}
}

// Copies of one event claimed at the same time (two replicas) send each
// delivery once.
func TestDeliveredRecordsConcurrentCopiesSendOnce(t *testing.T) {
	ctx := context.Background()
	r := testRecords(t)
	var sends atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := r.claim(ctx, "ev", 3)
			if err != nil {
				t.Error(err)
				return
			}
			for _, s := range c.states {
				if s == claimSend {
					sends.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := sends.Load(); n != 3 {
		t.Fatalf("%d sends for 3 deliveries claimed by 16 copies; want 3", n)
	}
}

// acks records what the consumer answered the broker.
type acks struct {
	mu                     sync.Mutex
	acked, requeued, nacks int
}

func (a *acks) Ack(uint64, bool) error { a.mu.Lock(); a.acked++; a.mu.Unlock(); return nil }
func (a *acks) Nack(_ uint64, _ bool, requeue bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if requeue {
		a.requeued++
	} else {
		a.nacks++
	}
	return nil
}
func (a *acks) Reject(tag uint64, requeue bool) error { return a.Nack(tag, false, requeue) }

// With records (either kind), an event delivered again after its
// deliveries were made (a redelivery, or a second copy) is acked without a
// second POST; an event that another copy is sending is put back, not
// acked, after its other deliveries are made and recorded.
func TestFloorConsumerDoesNotSendARedeliveredEventAgain(t *testing.T) {
	for _, kind := range []string{"record", "admit"} {
		t.Run(kind, func(t *testing.T) {
			var posts atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { posts.Add(1) }))
			defer srv.Close()
			secret, err := sign.NewSecret()
			if err != nil {
				t.Fatal(err)
			}
			c, err := newFloorConsumer([]string{srv.URL + "/a", srv.URL + "/b"}, []string{secret, secret})
			if err != nil {
				t.Fatal(err)
			}
			records := testRecords(t)
			c.records = records
			if kind == "admit" {
				c.records = &admitRecords{gate: admit.New(records.rdb, records.prefix, time.Hour), rdb: records.rdb, maxInFlight: 4}
			}
			ctx := context.Background()
			ack := &acks{}
			d := amqp.Delivery{Acknowledger: ack, MessageId: "ev1", Body: []byte(`{}`)}
			c.handle(ctx, d)
			if posts.Load() != 2 || ack.acked != 1 {
				t.Fatalf("first delivery: %d POSTs, %d acks; want 2, 1", posts.Load(), ack.acked)
			}
			d.Redelivered = true
			c.handle(ctx, d)
			if posts.Load() != 2 || ack.acked != 2 {
				t.Fatalf("redelivery: %d POSTs in all, %d acks; want still 2 POSTs, and an ack", posts.Load(), ack.acked)
			}

			other, err := c.records.claim(ctx, "ev2", 1) // another copy is sending to /a
			if err != nil || other.states[0] != claimSend {
				t.Fatalf("claim of the other copy = %v, %v", other, err)
			}
			c.handle(ctx, amqp.Delivery{Acknowledger: ack, MessageId: "ev2", Body: []byte(`{}`)})
			if posts.Load() != 3 || ack.acked != 2 || ack.requeued != 1 {
				t.Fatalf("copy of an event being sent: %d POSTs in all, %d acks, %d requeued; want 3 (only /b), 2, 1", posts.Load(), ack.acked, ack.requeued)
			}
			if got, _ := c.records.claim(ctx, "ev2", 2); got.states[1] != claimDone {
				t.Fatalf("the delivery to /b was not recorded before the event was put back: %v", got.states)
			}
		})
	}
}

// Through the admission, a delivery holds one of its endpoint's in-flight
// slots, shared by every consumer, from its claim to its record: an
// endpoint at its max in-flight gets no more until one is recorded.
func TestAdmitRecordsHoldAnInFlightSlot(t *testing.T) {
	ctx := context.Background()
	records := testRecords(t)
	a := &admitRecords{gate: admit.New(records.rdb, records.prefix, time.Hour), rdb: records.rdb, maxInFlight: 1}
	first, err := a.claim(ctx, "ev1", 1)
	if err != nil || first.states[0] != claimSend {
		t.Fatalf("first claim = %v, %v; want send", first, err)
	}
	if c, err := a.claim(ctx, "ev2", 1); err != nil || c.states[0] != claimBusy {
		t.Fatalf("claim of another event while the endpoint is full = %v, %v; want busy", c, err)
	}
	if err := a.record(ctx, first, []int{0}); err != nil {
		t.Fatal(err)
	}
	if c, err := a.claim(ctx, "ev2", 1); err != nil || c.states[0] != claimSend {
		t.Fatalf("claim once the slot was given back = %v, %v; want send", c, err)
	}
}
