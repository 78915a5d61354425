package dispatcher

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// SendMessage answers once the broker confirmed, and remembers the id in
// Redis afterwards without waiting. Close, which the service runs after its
// last request and before the connections close, must wait until those
// writes reached Redis: otherwise a SIGTERM loses them and a retry of an
// acknowledged message is published again.
func TestCloseRemembersSentIDs(t *testing.T) {
	id := newID()
	cfg := testConfig(id)
	q := cfg.Queues()
	check := testenv.Redis(t, cfg.KeyPrefix) // checks, and deletes the keys at the end
	testenv.Rabbit(t, q.Declare)             // declares the queues the events route to
	t.Cleanup(func() { testenv.DeleteQueues(q.All(), q.Delays().Exchange()) })

	// The dispatcher's broker and Redis connections go through proxies.
	bp := rabbittest.NewBrokerProxy(t)
	rp := rabbittest.NewProxy(t, check.(*redis.Client).Options().Addr)
	rdb := redis.NewClient(&redis.Options{Addr: rp.Addr(), MaxRetries: -1, ReadTimeout: time.Minute, WriteTimeout: time.Minute})
	t.Cleanup(func() { rdb.Close() })
	connCtx, cancelConn := context.WithCancel(context.Background())
	conn := rabbit.DialConfig(connCtx, bp.URL(), rabbit.Config{Setup: rabbit.DeclareFunc(rabbit.DeclareTopology)})
	t.Cleanup(func() { cancelConn(); conn.Close() })
	waitFor(t, 10*time.Second, "broker connection", func() bool { return conn.Check(context.Background()) == nil })
	d, err := New(cfg, Deps{Rabbit: conn, Redis: rdb, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}

	// Publishes are held at the broker while their ids are claimed; then
	// Redis is held and the broker let go, so every confirm of an id is
	// queued behind a Redis that does not answer.
	const n = 20
	tenant := "tenant-" + id
	ctx := auth.WithTenant(context.Background(), tenant)
	bp.Freeze()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.Messages.SendMessage(ctx, &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{
				Id: fmt.Sprintf("m%d", i), Source: id, Type: "a.b",
			}})
			errs <- err
		}()
	}
	ids := dedupe.New(check, cfg.EventIDsKeyPrefix)
	state := func(i int) string {
		v, _ := check.Get(context.Background(), ids.Key(tenant, id, fmt.Sprintf("m%d", i))).Result()
		return v
	}
	waitFor(t, 20*time.Second, "every id claimed", func() bool {
		for i := range n {
			if !strings.HasPrefix(state(i), "pending:") {
				return false
			}
		}
		return true
	})
	rp.Freeze()
	bp.Thaw()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("send: %v", err)
		}
	}

	// Close as the service does at shutdown. Once it returns, the process
	// may exit: the proxy then drops whatever it still holds. Redis is let
	// go only if Close is still waiting after a second.
	closed := make(chan struct{})
	go func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		rp.Cut()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(time.Second):
	}
	rp.Thaw()
	<-closed
	for i := range n {
		if s := state(i); s != "done" {
			t.Errorf("message m%d acknowledged, but its id is %q in Redis after Close, want \"done\"", i, s)
		}
	}
}
