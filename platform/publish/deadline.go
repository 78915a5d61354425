package publish

import (
	"sync"
	"time"
)

// deadlines hands every publish that starts within one granule the same
// channel, closed once the timeout has passed for all of them: one timer
// per granule instead of a context with a timer per publish, which was a
// measurable share of the CPU a webhook costs. A wait lasts between the
// timeout and the timeout plus one granule.
type deadlines struct {
	timeout, granule time.Duration

	mu sync.Mutex
	at time.Time // when ch is closed
	ch chan struct{}
}

func newDeadlines(timeout time.Duration) *deadlines {
	return &deadlines{timeout: timeout, granule: max(timeout/100, time.Millisecond)}
}

// after returns a channel closed at least d.timeout from now.
func (d *deadlines) after() <-chan struct{} {
	due := time.Now().Add(d.timeout)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil || due.After(d.at) {
		ch := make(chan struct{})
		d.ch, d.at = ch, due.Add(d.granule)
		time.AfterFunc(d.timeout+d.granule, func() { close(ch) })
	}
	return d.ch
}
