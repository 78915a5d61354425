package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/admit"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/metrics"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// tripCounter is a go-redis hook counting round trips (a pipeline or
// transaction is one) and failing the one numbered failAt, if set.
type tripCounter struct {
	mu     sync.Mutex
	trips  int
	failAt int
}

var errInjected = errors.New("injected redis failure")

func (c *tripCounter) trip() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trips++
	if c.trips == c.failAt {
		return errInjected
	}
	return nil
}

func (c *tripCounter) reset(failAt int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.trips
	c.trips, c.failAt = 0, failAt
	return n
}

func (c *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := c.trip(); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (c *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := c.trip(); err != nil {
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}

type settleEnv struct {
	t      *testing.T
	ctx    context.Context
	rdb    redis.UniversalClient
	trips  *tripCounter
	eps    *endpoint.Store
	msgs   *message.Store
	worker *Worker
	ep     *dispatcherv1.Endpoint
	n      int
}

const settleTenant = "acme"

// newSettleEnv runs a worker on real Redis and RabbitMQ against a
// subscriber that always answers status.
func newSettleEnv(t *testing.T, status int) *settleEnv {
	id := testenv.ID()
	prefix := testenv.KeyPrefix(id)
	rdb := testenv.Redis(t, prefix)
	trips := &tripCounter{}
	rdb.AddHook(trips)
	q := task.NewQueues("hookyard.test."+id, nil)
	conn := testenv.Rabbit(t, q.Declare)
	pub := rabbit.NewPublisher(conn, rabbit.PublisherConfig{})
	t.Cleanup(func() { pub.Close(); testenv.DeleteQueues(q.All(), q.Delays().Exchange()) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
	t.Cleanup(srv.Close)

	ctx := context.Background()
	eps := endpoint.New(rdb, prefix)
	msgs := message.New(rdb, prefix, time.Hour)
	ep, err := eps.Create(ctx, settleTenant, &dispatcherv1.Endpoint{Url: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}
	w := NewWorker(Config{DefaultTimeout: 5 * time.Second, DefaultMaxInFlight: 100, BreakerFailures: 1 << 20, Schedule: []time.Duration{time.Hour}},
		q, eps, msgs, admit.New(rdb, prefix, time.Hour), pub, client, metrics.New(nil), slog.New(slog.DiscardHandler))
	return &settleEnv{t: t, ctx: ctx, rdb: rdb, trips: trips, eps: eps, msgs: msgs, worker: w, ep: ep}
}

// handle records a fresh message and hands its first task to the worker
// with round trip failAt failing (0: none); it returns the message id and
// the round trips Handle made.
func (e *settleEnv) handle(failAt int) (string, int) {
	e.t.Helper()
	e.n++
	m := &message.Message{ID: fmt.Sprintf("m%d", e.n), Source: "app", Type: "a", RoutingKey: "app.a", CreateTime: time.Now(), Body: []byte(`{}`)}
	if _, err := e.msgs.Record(e.ctx, settleTenant, m); err != nil {
		e.t.Fatal(err)
	}
	if err := e.msgs.InitDeliveries(e.ctx, settleTenant, m.ID, []string{e.ep.GetId()}); err != nil {
		e.t.Fatal(err)
	}
	// The endpoint read is served from the cache, as on the hot path.
	if _, err := e.eps.Cached(e.ctx, settleTenant, e.ep.GetId()); err != nil {
		e.t.Fatal(err)
	}
	tk := &task.Task{Tenant: settleTenant, Message: m.ID, Endpoint: e.ep.GetId(), RoutingKey: m.RoutingKey, Body: m.Body}
	p := tk.Publishing()
	e.trips.reset(failAt)
	e.worker.Handle(e.ctx, amqp.Delivery{Acknowledger: nopAck{}, Headers: p.Headers, MessageId: p.MessageId, Body: p.Body})
	return m.ID, e.trips.reset(0)
}

// state returns the attempts logged for id and its delivery state.
func (e *settleEnv) state(id string) (int, message.Delivery) {
	e.t.Helper()
	atts, _, err := e.msgs.Attempts(e.ctx, settleTenant, id, 100, "")
	if err != nil {
		e.t.Fatal(err)
	}
	_, ds, err := e.msgs.Get(e.ctx, settleTenant, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(atts), ds[e.ep.GetId()]
}

type nopAck struct{}

func (nopAck) Ack(uint64, bool) error        { return nil }
func (nopAck) Nack(uint64, bool, bool) error { return nil }
func (nopAck) Reject(uint64, bool) error     { return nil }

// An attempt and the state it leads to are written in one round trip
// after the admission: a retry, a dead letter and a hold each make exactly
// two (admit, write), where each used to make three or four.
func TestAttemptIsOneWrite(t *testing.T) {
	for _, c := range []struct {
		status int
		want   string
	}{
		{http.StatusServiceUnavailable, message.StatusRetrying},
		{http.StatusBadRequest, message.StatusFailed},
		{http.StatusOK, message.StatusDelivered},
	} {
		t.Run(c.want, func(t *testing.T) {
			e := newSettleEnv(t, c.status)
			e.handle(0) // loads the scripts
			id, trips := e.handle(0)
			if n, d := e.state(id); n != 1 || d.Status != c.want || d.Attempts != 1 {
				t.Fatalf("after one attempt: %d attempts logged, delivery %+v; want 1 and %s", n, d, c.want)
			}
			if trips != 2 {
				t.Fatalf("an attempt ending %s made %d Redis round trips, want 2 (admit, write)", c.want, trips)
			}
		})
	}
}

// Whichever Redis round trip fails, an attempt is logged if and only if
// the delivery state moved on from pending: never an attempt without its
// outcome, or an outcome without its attempt.
func TestAttemptAndStateAreWrittenTogether(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusBadRequest, http.StatusGone} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			e := newSettleEnv(t, status)
			e.handle(0)
			for failAt := 1; failAt <= 6; failAt++ {
				id, _ := e.handle(failAt)
				n, d := e.state(id)
				if (n > 0) != (d.Status != message.StatusPending) {
					t.Errorf("round trip %d failing: %d attempts logged, delivery %+v", failAt, n, d)
				}
				if status == http.StatusGone {
					// Enable the endpoint again for the next message.
					if _, err := e.eps.Modify(e.ctx, settleTenant, e.ep.GetId(), func(r *endpoint.Record) error {
						r.Endpoint.Disabled, r.Endpoint.DisabledReason, r.Notice = false, "", ""
						return nil
					}); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}
