package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// ErrTooManyWaiters is returned by Wait when the replica already serves
// its cap of waiting calls.
var ErrTooManyWaiters = errors.New("too many tasks waited for at once on this replica; retry later")

// waiters fans the end notices of every task out to the Wait calls of this
// replica from one pattern subscription, so a waiting call costs a map
// entry rather than a Redis connection.
type waiters struct {
	max int

	mu    sync.Mutex
	n     int
	chans map[string][]chan struct{} // done channel → waiting calls
}

func (w *waiters) add(channel string) (chan struct{}, func(), error) {
	c := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n >= w.max {
		return nil, nil, ErrTooManyWaiters
	}
	w.n++
	w.chans[channel] = append(w.chans[channel], c)
	return c, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.n--
		l := w.chans[channel]
		for i, x := range l {
			if x == c {
				l = append(l[:i], l[i+1:]...)
				break
			}
		}
		if len(l) == 0 {
			delete(w.chans, channel)
		} else {
			w.chans[channel] = l
		}
	}, nil
}

func (w *waiters) notify(channel string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.chans[channel] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// RunWaiters keeps the replica's one subscription to task ends until ctx
// ends, resubscribing after an error. While it is down, waiting calls
// still notice an end by their own periodic check.
func (s *Store) RunWaiters(ctx context.Context) error {
	pattern := s.Key("done", "*")
	for ctx.Err() == nil {
		sub := s.rdb.PSubscribe(ctx, pattern)
		if _, err := sub.Receive(ctx); err == nil {
			msgs := sub.Channel()
		recv:
			for {
				select {
				case <-ctx.Done():
					break recv
				case msg, ok := <-msgs:
					if !ok {
						break recv
					}
					if strings.HasPrefix(msg.Channel, s.p) {
						s.waiters.notify(msg.Channel)
					}
				}
			}
		}
		_ = sub.Close()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// Wait blocks until the task is in an end state, ctx ends or timeout
// passes, and returns it as it is then. ErrTooManyWaiters if the replica
// serves its cap of waiting calls.
func (s *Store) Wait(ctx context.Context, tenant, id string, timeout time.Duration) (*Task, error) {
	ended, stop, err := s.waiters.add(s.done(tenant, id))
	if err != nil {
		return nil, err
	}
	defer stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// The waiter is registered before the first read, so an end between
	// the two is not missed; the ticker covers a lost message and a
	// subscription being re-established.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		t, err := s.Get(ctx, tenant, id)
		if err != nil {
			return nil, fmt.Errorf("wait %s: %w", id, err)
		}
		if Ended(t.State) {
			return t, nil
		}
		select {
		case <-ended:
		case <-tick.C:
		case <-deadline.C:
			return s.Get(ctx, tenant, id)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
