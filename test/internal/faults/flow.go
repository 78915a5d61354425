package faults

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookyard/hookyard/test/internal/sink"
	"github.com/hookyard/hookyard/test/internal/suite"
)

// flow is one tenant's path through the suite: a Stripe source on
// ingress, an endpoint on the dispatcher delivering to the sink and a
// trigger on jobs running an http task per event.
type flow struct {
	st             *suite.Stack
	id             string
	source, secret string
	trigger        string
	sub            *sink.Sink
}

func newFlow(ctx context.Context, st *suite.Stack, id, key string, sub *sink.Sink, tasks *taskTarget) (*flow, error) {
	f := &flow{st: st, id: id, source: "stripe-" + id, secret: "whsec_" + suite.RandHex(16), sub: sub}
	if err := st.Ingress().JSON(ctx, "POST", "/v1/sources", key, map[string]any{"name": f.source, "provider": "stripe", "secrets": []string{f.secret}}, 200, nil); err != nil {
		return nil, err
	}
	var ep struct{ ID, Secret string }
	if err := st.Dispatcher().JSON(ctx, "POST", "/v1/endpoints", key, map[string]any{"url": sub.URL("/hooks"), "eventTypes": []string{f.source + ".#"}, "maxInFlight": 32}, 200, &ep); err != nil {
		return nil, err
	}
	if err := sub.SetSecret("/hooks", ep.Secret); err != nil {
		return nil, err
	}
	var trig struct{ ID string }
	if err := st.Jobs().JSON(ctx, "POST", "/v1/triggers", key, map[string]any{
		"eventType": f.source + ".#",
		"task":      map[string]any{"name": "http", "args": map[string]any{"url": tasks.url(), "method": "POST"}, "maxRetries": 20, "retryBackoffMax": "5s"},
		"argsFrom":  map[string]string{"body": "/id"},
	}, 200, &trig); err != nil {
		return nil, err
	}
	f.trigger = trig.ID
	return f, nil
}

// send posts n webhooks from concurrency senders that behave like a
// provider: a webhook is sent again, with the same event id, until it is
// answered 2xx. With busy non-nil it keeps sending past n until busy is
// closed, so that faults happen under load however fast the machine is.
// It fills in the send figures of rep and returns the ids of the
// acknowledged events.
func (f *flow) send(ctx context.Context, n, concurrency int, busy <-chan struct{}, rep *Report, logf func(string, ...any)) []string {
	var mu sync.Mutex
	var acked []string
	var nAcked, nGaveUp atomic.Int64
	start := time.Now()
	next := make(chan int)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				evt := fmt.Sprintf("evt_%s_%d", f.id, i)
				body := []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":"invoice.paid","data":{"object":{"id":"in_%d"}}}`, evt, i))
				backoff := 200 * time.Millisecond
				giveUp := time.Now().Add(10 * time.Minute)
				for {
					code, _, err := f.st.Ingress().PostStripe(ctx, f.source, f.secret, body)
					if err == nil && code/100 == 2 {
						mu.Lock()
						acked = append(acked, evt)
						mu.Unlock()
						nAcked.Add(1)
						break
					}
					if ctx.Err() != nil || time.Now().After(giveUp) {
						nGaveUp.Add(1)
						break
					}
					time.Sleep(backoff)
					backoff = min(2*backoff, 2*time.Second)
				}
			}
		}()
	}
	sent := 0
	go func() {
		defer close(next)
		for i := 0; ; i++ {
			if i >= n {
				if busy == nil {
					return
				}
				select {
				case <-busy:
					return
				default:
				}
			}
			if i > 0 && i%1000 == 0 {
				logf("sent %d, acknowledged %d, delivered %d", i, nAcked.Load(), len(f.sub.Counts()))
			}
			select {
			case next <- i:
				sent = i + 1
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	rep.SendTime = time.Since(start)
	rep.Sent, rep.Acknowledged, rep.GaveUp = sent, int(nAcked.Load()), int(nGaveUp.Load())
	return acked
}

// drain waits up to wait until every acknowledged event has reached the
// subscriber, then counts what was delivered, duplicated and lost.
func (f *flow) drain(ctx context.Context, ids []string, wait time.Duration, rep *Report, logf func(string, ...any)) {
	_ = suite.Eventually(ctx, wait, func() error {
		counts := f.sub.Counts()
		missing := 0
		for _, evt := range ids {
			if counts[evt] == 0 {
				missing++
			}
		}
		if missing > 0 {
			logf("waiting for %d of %d deliveries", missing, len(ids))
			time.Sleep(5 * time.Second)
			return fmt.Errorf("%d not delivered", missing)
		}
		return nil
	})
	counts := f.sub.Counts()
	for _, evt := range ids {
		switch n := counts[evt]; {
		case n == 0:
			rep.Lost++
		default:
			rep.Delivered++
			rep.Duplicated += n - 1
		}
	}
}
