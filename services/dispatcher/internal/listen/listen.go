// Package listen streams a tenant's events and delivery attempts to
// development tools (hookyard listen and tail) over
// EventStreamService.StreamEvents.
//
// While a tenant has had a stream open recently, the fan-out appends each
// of its events (the message id and routing key; the body stays in the
// message store) and the delivery worker each of its attempts to a capped
// Redis stream of the tenant. A stream RPC reads from there, so a client
// that reconnects with its cursor gets what arrived while it was away, as
// long as that is within the resume window and the cap. Tenants nobody
// listens to cost nothing but a map lookup per event.
//
// Layout (P is the dispatcher's key prefix):
//
//	P:listen:active     sorted set: tenant by the time (ms) its window ends
//	P:listen:{t}        stream: k=e m=<message id> r=<routing key>, or
//	                    k=a m=<message id> a=<attempt, protobuf>
package listen

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
)

// Defaults of Config.
const (
	DefaultWindow       = 10 * time.Minute
	DefaultMaxLen       = 10000
	DefaultRefresh      = time.Second
	DefaultPoll         = 500 * time.Millisecond
	DefaultMaxStreams   = 256
	DefaultMaxPerTenant = 16
	// maxSnippet cuts the response snippet of a streamed attempt.
	maxSnippet = 256
)

// Config tunes a Hub; zero fields take the defaults.
type Config struct {
	// Window is how long after its last stream ends a tenant's items are
	// still recorded and kept for a resume.
	Window time.Duration
	// MaxLen caps a tenant's stream (approximately, as XADD MAXLEN ~).
	MaxLen int64
	// Refresh is how often the tenants with a recent stream are re-read
	// from Redis, so that every replica records their events.
	Refresh time.Duration
	// Poll is how often an open stream looks for new items when nothing
	// woke it.
	Poll time.Duration
	// MaxStreams bounds the streams open on one replica, MaxPerTenant those
	// of one tenant on one replica.
	MaxStreams   int
	MaxPerTenant int
}

func (c *Config) defaults() {
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.MaxLen <= 0 {
		c.MaxLen = DefaultMaxLen
	}
	if c.Refresh <= 0 {
		c.Refresh = DefaultRefresh
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxPerTenant <= 0 {
		c.MaxPerTenant = DefaultMaxPerTenant
	}
}

// Hub records the items of listened tenants and serves StreamEvents.
type Hub struct {
	dispatcherv1.UnimplementedEventStreamServiceServer

	rdb    redis.UniversalClient
	prefix string
	msgs   *message.Store
	cfg    Config
	log    *slog.Logger

	mu      sync.Mutex
	active  map[string]time.Time // from Redis: tenant → end of its window
	local   map[string]int       // streams open on this replica
	wake    map[string]chan struct{}
	streams int
	// done closes when the service shuts down, ending every stream.
	done     chan struct{}
	doneOnce sync.Once
}

// New returns a Hub over the dispatcher's Redis and message store.
func New(rdb redis.UniversalClient, prefix string, msgs *message.Store, cfg Config, log *slog.Logger) *Hub {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{
		rdb: rdb, prefix: prefix, msgs: msgs, cfg: cfg, log: log,
		active: map[string]time.Time{}, local: map[string]int{}, wake: map[string]chan struct{}{},
		done: make(chan struct{}),
	}
}

// Window is how long items are kept for a resume.
func (h *Hub) Window() time.Duration { return h.cfg.Window }

func (h *Hub) activeKey() string              { return h.prefix + ":listen:active" }
func (h *Hub) streamKey(tenant string) string { return fmt.Sprintf("%s:listen:{%s}", h.prefix, tenant) }

// listened reports whether tenant's items are to be recorded.
func (h *Hub) listened(tenant string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.local[tenant] > 0 || time.Now().Before(h.active[tenant])
}

// Event records an event of tenant that was fanned out, if the tenant is
// listened to. Failing to record it is logged, never returned: the
// delivery of the event does not depend on it.
func (h *Hub) Event(ctx context.Context, tenant string, m *message.Message) {
	if !h.listened(tenant) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	pipe := h.rdb.Pipeline()
	h.queue(ctx, pipe, tenant, "k", "e", "m", m.ID, "r", m.RoutingKey)
	if _, err := pipe.Exec(ctx); err != nil {
		h.log.Warn("recording an event for its listeners failed", "err", err, "tenant", tenant, "message_id", m.ID)
		return
	}
	h.notify(tenant)
}

// QueueAttempt adds the recording of an attempt to pipe, which the
// delivery worker executes with its own writes, if the tenant is listened
// to (message.Store.OnAttempt).
func (h *Hub) QueueAttempt(ctx context.Context, pipe redis.Pipeliner, tenant, id string, a *dispatcherv1.Attempt) {
	if !h.listened(tenant) {
		return
	}
	c := proto.CloneOf(a)
	if len(c.ResponseSnippet) > maxSnippet {
		c.ResponseSnippet = message.Snippet(c.ResponseSnippet[:maxSnippet])
	}
	b, err := proto.Marshal(c)
	if err != nil {
		return
	}
	h.queue(ctx, pipe, tenant, "k", "a", "m", id, "a", b)
}

func (h *Hub) queue(ctx context.Context, pipe redis.Pipeliner, tenant string, values ...any) {
	key := h.streamKey(tenant)
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, MaxLen: h.cfg.MaxLen, Approx: true, Values: values})
	pipe.PExpire(ctx, key, h.cfg.Window)
}

// notify wakes this replica's streams of tenant.
func (h *Hub) notify(tenant string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.wake[tenant]; ok {
		close(ch)
		delete(h.wake, tenant)
	}
}

// waiter returns a channel closed at the next notify of tenant.
func (h *Hub) waiter(tenant string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.wake[tenant]
	if !ok {
		ch = make(chan struct{})
		h.wake[tenant] = ch
	}
	return ch
}

// Run keeps the set of listened tenants current until ctx ends, then ends
// every open stream so that shutdown need not wait for them.
func (h *Hub) Run(ctx context.Context) error {
	defer h.doneOnce.Do(func() { close(h.done) })
	t := time.NewTicker(h.cfg.Refresh)
	defer t.Stop()
	var n int
	for {
		if err := h.refresh(ctx, n%60 == 0); err != nil && ctx.Err() == nil {
			h.log.Warn("reading the tenants with listeners failed", "err", err)
		}
		n++
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// refresh re-reads the listened tenants; with prune it also drops those
// whose window ended.
func (h *Hub) refresh(ctx context.Context, prune bool) error {
	now := time.Now()
	nowMS := strconv.FormatInt(now.UnixMilli(), 10)
	if prune {
		if err := h.rdb.ZRemRangeByScore(ctx, h.activeKey(), "-inf", "("+nowMS).Err(); err != nil {
			return err
		}
	}
	zs, err := h.rdb.ZRangeByScoreWithScores(ctx, h.activeKey(), &redis.ZRangeBy{Min: nowMS, Max: "+inf"}).Result()
	if err != nil {
		return err
	}
	active := make(map[string]time.Time, len(zs))
	for _, z := range zs {
		if t, ok := z.Member.(string); ok {
			active[t] = time.UnixMilli(int64(z.Score))
		}
	}
	h.mu.Lock()
	h.active = active
	h.mu.Unlock()
	return nil
}

// mark records in Redis that tenant is listened to for another window.
func (h *Hub) mark(ctx context.Context, tenant string) error {
	end := time.Now().Add(h.cfg.Window)
	if err := h.rdb.ZAdd(ctx, h.activeKey(), redis.Z{Score: float64(end.UnixMilli()), Member: tenant}).Err(); err != nil {
		return fmt.Errorf("mark tenant listened: %w", err)
	}
	h.mu.Lock()
	if end.After(h.active[tenant]) {
		h.active[tenant] = end
	}
	h.mu.Unlock()
	return nil
}

// validCursor reports whether c is a stream entry id, "<ms>-<seq>".
func validCursor(c string) bool {
	ms, seq, ok := strings.Cut(c, "-")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return err1 == nil && err2 == nil
}

// before reports whether stream id a is before b.
func before(a, b string) bool {
	ams, aseq, _ := strings.Cut(a, "-")
	bms, bseq, _ := strings.Cut(b, "-")
	x, _ := strconv.ParseUint(ams, 10, 64)
	y, _ := strconv.ParseUint(bms, 10, 64)
	if x != y {
		return x < y
	}
	s, _ := strconv.ParseUint(aseq, 10, 64)
	t, _ := strconv.ParseUint(bseq, 10, 64)
	return s < t
}
