// Package runner moves tasks along: the pump hands due tasks to the broker,
// the reaper ends attempts whose lease ran out, and the hub tells local
// lease holders when an attempt has ended.
package runner

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hookyard/hookyard/services/jobs/internal/bus"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// Pump publishes due tasks (new ones whose fast path failed, ETA and
// countdown tasks, retries) from the Redis schedule to the broker. Every
// replica runs one; claims keep them from publishing the same entry at
// once, and a note published twice is dropped at lease time.
type Pump struct {
	Store    *store.Store
	Bus      *bus.Bus
	Log      *slog.Logger
	Interval time.Duration // default 50ms
	Rearm    time.Duration // default 30s
	// Retry is how soon an entry whose publish failed is due again
	// (default 1s). It is un-claimed at once rather than left to its
	// rearm: a refused publish (a queue just declared by several
	// replicas at once, a broker blip) usually succeeds on the next try.
	Retry time.Duration

	wake      chan struct{}
	published chan store.Ready // confirmed notes whose entries to push back
	once      sync.Once
}

func (p *Pump) init() {
	p.once.Do(func() {
		p.wake = make(chan struct{}, 1)
		p.published = make(chan store.Ready, 4096)
		if p.Interval <= 0 {
			p.Interval = 50 * time.Millisecond
		}
		if p.Rearm <= 0 {
			p.Rearm = 30 * time.Second
		}
		if p.Retry <= 0 {
			p.Retry = time.Second
		}
	})
}

// Wake makes the pump look now.
func (p *Pump) Wake() {
	p.init()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Publish hands one ready task to the broker now; on failure the entry
// stays in the schedule and the pump retries it.
func (p *Pump) Publish(ctx context.Context, r store.Ready) error {
	name, queue, ok, err := p.Store.Route(ctx, r)
	if err != nil || !ok {
		return err
	}
	return p.PublishNew(ctx, r, name, queue)
}

// PublishNew is Publish for a task just enqueued, whose name and queue the
// caller has: it skips reading them back. A note that went stale meanwhile
// (a cancel at once) is dropped at lease time like any other.
func (p *Pump) PublishNew(ctx context.Context, r store.Ready, name, queue string) error {
	p.init()
	if err := p.Bus.Publish(ctx, p.Bus.Route(r.Tenant, name, queue), r); err != nil {
		return err
	}
	// The entry is pushed back NoteTimeout by Run, many in one round trip.
	// Until then it is due at its claim's rearm or its enqueue's
	// FastPathHold: a push lost with this replica only costs a duplicate
	// note, which the lease drops.
	select {
	case p.published <- r:
		return nil
	default:
		return p.Store.Published(ctx, r)
	}
}

// Failed hands the entry of a note whose fast-path publish failed to the
// pump at once.
func (p *Pump) Failed(ctx context.Context, r store.Ready) {
	if err := p.Store.Unclaim(ctx, r, 0); err != nil {
		p.Log.WarnContext(ctx, "un-claim new task; the pump publishes it after the hold", "task_id", r.ID, "err", err)
	}
	p.Wake()
}

// pushBack records confirmed notes until ctx ends, batching what arrives
// while a round trip is under way.
func (p *Pump) pushBack(ctx context.Context) {
	batch := make([]store.Ready, 0, 512)
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.published:
			batch = append(batch[:0], r)
		}
	more:
		for len(batch) < cap(batch) {
			select {
			case r := <-p.published:
				batch = append(batch, r)
			default:
				break more
			}
		}
		if err := p.Store.PublishedAll(ctx, batch); err != nil && ctx.Err() == nil {
			p.Log.WarnContext(ctx, "push back published notes; their entries are published again", "n", len(batch), "err", err)
		}
	}
}

// Run pumps until ctx ends.
func (p *Pump) Run(ctx context.Context) error {
	p.init()
	go p.pushBack(ctx)
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		for {
			n, err := p.once1(ctx)
			if err != nil && ctx.Err() == nil {
				p.Log.WarnContext(ctx, "pump", "err", err)
				break
			}
			if n < 256 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-p.wake:
		}
	}
}

func (p *Pump) once1(ctx context.Context) (int, error) {
	rs, err := p.Store.Claim(ctx, 256, p.Rearm)
	if err != nil || len(rs) == 0 {
		return 0, err
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, r := range rs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := p.Publish(ctx, r); err != nil && ctx.Err() == nil {
				p.Log.WarnContext(ctx, "publish ready task", "task_id", r.ID, "err", err)
				if err := p.Store.Unclaim(ctx, r, p.Retry); err != nil {
					p.Log.WarnContext(ctx, "un-claim ready task; it is due again after the rearm", "task_id", r.ID, "err", err)
				}
			}
		}()
	}
	wg.Wait()
	return len(rs), nil
}
