package fanout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
)

// Deliverer makes an attempt at a delivery the way the delivery worker
// handles a task (deliver.Worker.Deliver): same admission, same attempt,
// same bookkeeping. A nil error means the delivery is recorded as
// delivered or held, or has its durable task on the broker.
type Deliverer interface {
	Deliver(ctx context.Context, t *task.Task) error
}

// Defaults of the fast path.
const (
	// DefaultFirstAttemptBudget is how long an event's fan-out waits for
	// the first attempts it makes itself.
	DefaultFirstAttemptBudget = 2 * time.Second
	// slowFor is how long an endpoint whose first attempt outlasted the
	// budget gets its tasks published at once instead: a slow endpoint
	// holds a fan-out slot for one budget, not one per event.
	slowFor = time.Minute
	// maxFirstAttempts bounds the first attempts one event makes at once.
	maxFirstAttempts = 32
)

// errNotStarted: the budget passed before the attempt could start.
var errNotStarted = errors.New("first attempt not started within the budget")

// first is one first attempt made by the fan-out.
type first struct {
	orig task.Task // the task as it would have been published
	err  error     // read only after done is closed
	done chan struct{}
}

// deliverFirst makes the first attempt of each of ts itself, through
// First, and returns once every one of them is recorded as delivered (or
// held) or has its durable task: the task the attempt's outcome led to (a
// retry or a deferral: rate limit, in-flight cap, breaker), or, for an
// attempt still running (or not started) when the budget passes, ts's
// task published here. It returns the number of tasks it published.
//
// An attempt that outlasts the budget runs on in the background, holding
// its admission lock and in-flight lease; the task published for it is a
// second copy that the lock defers while the attempt runs and that the
// delivered marker or the attempt count (admit.Done, admit.Stale) drops
// afterwards, so it never delivers twice. A crash at any point leaves
// either the event unacked (the fan-out is replayed and admission skips
// what was delivered) or every delivery with its state or its task.
func (f *Fanout) deliverFirst(ctx context.Context, ts []*task.Task) (int, error) {
	budget, cancel := context.WithTimeout(ctx, f.FirstAttemptBudget)
	defer cancel()
	sem := make(chan struct{}, maxFirstAttempts)
	fs := make([]*first, len(ts))
	// The attempts keep ctx's values (its trace) but are not cut when
	// the event's handling ends: each is bounded by its endpoint's
	// timeout, and Run waits for them, cutting them (f.attempts) only when
	// the shutdown grace has passed. They share one context, ended by the
	// last of them: one per attempt cost as much as the rest of the
	// fan-out's own work for an attempt.
	actx, end := f.attemptContext(ctx)
	var left atomic.Int32
	left.Store(int32(len(ts)))
	for i, t := range ts {
		a := &first{orig: *t, done: make(chan struct{})}
		fs[i] = a
		f.wg.Add(1)
		f.attempters.run(func() {
			defer f.wg.Done()
			defer close(a.done)
			defer func() {
				if left.Add(-1) == 0 {
					end()
				}
			}()
			select {
			case sem <- struct{}{}:
			case <-budget.Done():
				a.err = errNotStarted
				return
			}
			defer func() { <-sem }()
			if budget.Err() != nil {
				a.err = errNotStarted
				return
			}
			a.err = f.First.Deliver(actx, t)
		})
	}
	published := 0
	for _, a := range fs {
		if finished(a, budget) {
			if a.err == nil {
				f.firstDone.Inc()
				continue
			}
			if !errors.Is(a.err, errNotStarted) {
				// Neither an outcome nor the task could be written: the
				// event is put back and the fan-out replayed.
				return published, a.err
			}
		} else {
			f.markSlow(a.orig.Endpoint)
		}
		f.metrics.FirstAttempts.WithLabelValues("handed_over").Inc()
		if err := f.publishTask(ctx, &a.orig); err != nil {
			return published, err
		}
		published++
	}
	return published, nil
}

// attemptContext returns a context with ctx's values, cut when Run's
// shutdown grace has passed, and the function that ends it.
func (f *Fanout) attemptContext(ctx context.Context) (context.Context, func()) {
	actx, cut := context.WithCancel(context.WithoutCancel(ctx))
	if f.attempts == nil {
		return actx, cut
	}
	stop := context.AfterFunc(f.attempts, cut)
	return actx, func() { stop(); cut() }
}

// finished waits for a until the budget passes and reports whether a
// finished. An attempt that finished is never taken for a slow one, even
// when the budget has passed too by the time it is looked at.
func finished(a *first, budget context.Context) bool {
	select {
	case <-a.done:
		return true
	default:
	}
	select {
	case <-a.done:
		return true
	case <-budget.Done():
		return false
	}
}

// publishTask publishes t, even while shutting down.
func (f *Fanout) publishTask(ctx context.Context, t *task.Task) error {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := f.queues.Enqueue(pctx, f.pub, t); err != nil {
		return fmt.Errorf("publish delivery task: %w", err)
	}
	return nil
}

// slowEndpoints remembers endpoints whose first attempt outlasted the
// budget, until when.
type slowEndpoints struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (f *Fanout) markSlow(ep string) {
	f.slow.mu.Lock()
	defer f.slow.mu.Unlock()
	if f.slow.until == nil {
		f.slow.until = map[string]time.Time{}
	}
	f.slow.until[ep] = time.Now().Add(slowFor)
}

// isSlow reports whether ep outlasted the budget within slowFor.
func (f *Fanout) isSlow(ep string) bool {
	f.slow.mu.Lock()
	defer f.slow.mu.Unlock()
	until, ok := f.slow.until[ep]
	if ok && time.Now().After(until) {
		delete(f.slow.until, ep)
		return false
	}
	return ok
}

// waitFirstAttempts waits for the first attempts still running in the
// background.
func (f *Fanout) waitFirstAttempts() { f.wg.Wait() }

// attempters runs first attempts on goroutines kept for the next ones. A
// fresh goroutine per attempt grows its stack through the HTTP client and
// Redis calls every time (three or four copies of it); a kept one has
// grown it already.
type attempters struct {
	jobs chan func() // unbuffered: a send succeeds only if one is idle
}

// attempterIdle is how long an idle attempter waits for work before it
// ends.
const attempterIdle = 10 * time.Second

// run runs fn on an idle attempter, or on a new one if none is idle.
func (a *attempters) run(fn func()) {
	select {
	case a.jobs <- fn:
	default:
		go a.loop(fn)
	}
}

func (a *attempters) loop(fn func()) {
	idle := time.NewTimer(attempterIdle)
	defer idle.Stop()
	for {
		fn()
		idle.Reset(attempterIdle)
		select {
		case fn = <-a.jobs:
		case <-idle.C:
			return
		}
	}
}
