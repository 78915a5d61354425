package runner

import "sync"

// Hub tells the lease streams of this replica that an attempt they handed
// out has ended, so the worker's slot is free at once. An attempt ended on
// another replica is noticed by the stream's own check instead.
type Hub struct {
	mu   sync.Mutex
	subs map[string][]chan struct{}
}

// NewHub returns an empty Hub.
func NewHub() *Hub { return &Hub{subs: map[string][]chan struct{}{}} }

// Watch returns a channel closed when Ended is called for the task, and a
// function to stop watching.
func (h *Hub) Watch(tenant, id string) (<-chan struct{}, func()) {
	k := tenant + "|" + id
	c := make(chan struct{})
	h.mu.Lock()
	h.subs[k] = append(h.subs[k], c)
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		l := h.subs[k]
		for i, x := range l {
			if x == c {
				h.subs[k] = append(l[:i], l[i+1:]...)
				break
			}
		}
		if len(h.subs[k]) == 0 {
			delete(h.subs, k)
		}
	}
}

// Ended wakes the watchers of a task.
func (h *Hub) Ended(tenant, id string) {
	k := tenant + "|" + id
	h.mu.Lock()
	l := h.subs[k]
	delete(h.subs, k)
	h.mu.Unlock()
	for _, c := range l {
		close(c)
	}
}
