package redisconn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"
)

// Redis acknowledges a write once the primary has it; its replicas get it
// a moment later. A failover in that moment loses the write, so a service
// that acknowledges work (acks a broker message, answers a client) on the
// strength of a Redis write first asks the primary, with WAIT, to confirm
// that a replica has it too: Replicated.

// AutoReplicas is the WaitConfig.Replicas default: wait for one replica
// when the primary reports one online, else for none.
const AutoReplicas = -1

// WaitConfig says what Replicated waits for.
type WaitConfig struct {
	// Replicas is how many replicas must confirm a write: AutoReplicas,
	// 0 (never wait) or a number the primary is expected to have.
	Replicas int
	// Timeout bounds one WAIT; fewer confirmations by then is an error.
	// It must stay below the client's read timeout (5 s by default).
	Timeout time.Duration
}

// DefaultWait is what a client waits for unless SetWait says otherwise.
var DefaultWait = WaitConfig{Replicas: AutoReplicas, Timeout: time.Second}

// ErrNotReplicated is returned by Replicated when fewer replicas than
// wanted confirmed the writes in time, or the primary changed since the
// last wait: they may be on the old primary only.
var ErrNotReplicated = errors.New("redis: writes not confirmed by enough replicas")

// ParseWaitReplicas reads a replica count setting: "auto" (or empty) is
// AutoReplicas, otherwise a number ≥ 0.
func ParseWaitReplicas(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "auto") {
		return AutoReplicas, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("redis wait replicas %q: want auto or a number ≥ 0", s)
	}
	return n, nil
}

// How often Auto looks up the online replicas (INFO replication), and
// how long a replica may go without acknowledging the stream (it does
// every second) and still count.
const (
	replicaRefresh = time.Second
	replicaMaxLag  = 3
)

// barrierChannel is published to (nobody listens) so that the WAIT that
// follows on the same connection covers every write the primary had
// answered before: WAIT waits for the replication offset of its own
// connection's last propagated command, and a PUBLISH is propagated.
const barrierChannel = "hookyard:replication-barrier"

// SetWait sets what Replicated waits for on rdb.
func SetWait(rdb redis.UniversalClient, cfg WaitConfig) error {
	if cfg.Replicas < AutoReplicas {
		return fmt.Errorf("redis wait replicas: %d", cfg.Replicas)
	}
	if cfg.Timeout <= 0 {
		return fmt.Errorf("redis wait timeout %v: must be positive", cfg.Timeout)
	}
	c, ok := rdb.(*redis.Client)
	if !ok {
		if cfg.Replicas > 0 {
			return errors.New("redis wait replicas: only for one server or Sentinel, not Redis Cluster")
		}
		return nil
	}
	if rt := c.Options().ReadTimeout; rt > 0 && cfg.Timeout >= rt {
		return fmt.Errorf("redis wait timeout %v: must be below the read timeout %v", cfg.Timeout, rt)
	}
	w := waiterFor(c)
	w.replicas.Store(int64(cfg.Replicas))
	w.timeout.Store(int64(cfg.Timeout))
	return nil
}

// Replicated returns nil once every write rdb's primary had answered
// before the call is confirmed by the replicas SetWait asks for, and at
// once when it asks for none (with AutoReplicas: the primary reported no
// replica online at its last look, taken at most once a second, so no
// round trip is added then). Callers waiting at the same time share one
// WAIT. An error means the writes may be on the primary only: do not
// acknowledge what rests on them. Redis Cluster is not waited for.
func Replicated(ctx context.Context, rdb redis.UniversalClient) error {
	c, ok := rdb.(*redis.Client)
	if !ok {
		return nil
	}
	w := waiterFor(c)
	n, err := w.need(ctx, c)
	if err != nil || n == 0 {
		return err
	}
	return w.join(ctx, c, n)
}

// waiters holds each client's waiter without keeping the client alive.
var waiters sync.Map // weak.Pointer[redis.Client] → *waiter

func waiterFor(c *redis.Client) *waiter {
	key := weak.Make(c)
	if w, ok := waiters.Load(key); ok {
		return w.(*waiter)
	}
	w := &waiter{}
	w.replicas.Store(int64(DefaultWait.Replicas))
	w.timeout.Store(int64(DefaultWait.Timeout))
	w.online.Store(-1)
	got, loaded := waiters.LoadOrStore(key, w)
	if !loaded {
		runtime.AddCleanup(c, func(k weak.Pointer[redis.Client]) { waiters.Delete(k) }, key)
	}
	return got.(*waiter)
}

// waiter is one client's wait state. It holds no reference to the client:
// each call passes it in.
type waiter struct {
	replicas atomic.Int64 // configured: AutoReplicas or a count
	timeout  atomic.Int64 // time.Duration

	online     atomic.Int64 // replicas online at the last look; -1 before the first
	checked    atomic.Int64 // unix nanoseconds of the last look
	refreshing atomic.Bool

	mu     sync.Mutex
	next   *round // the round callers join; not yet started
	busy   bool   // a goroutine is running rounds
	replid string // the primary's replication id at the last round
}

// round is one PUBLISH+WAIT shared by the callers that joined it.
type round struct {
	need int
	done chan struct{}
	err  error
}

// need is how many replicas to wait for now.
func (w *waiter) need(ctx context.Context, c *redis.Client) (int, error) {
	n := int(w.replicas.Load())
	if n != AutoReplicas {
		return n, nil
	}
	if w.online.Load() < 0 {
		// Not known yet: look once before answering.
		if err := w.refresh(ctx, c); err != nil {
			return 0, err
		}
	} else if time.Since(time.Unix(0, w.checked.Load())) >= replicaRefresh && w.refreshing.CompareAndSwap(false, true) {
		go func() {
			defer w.refreshing.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = w.refresh(ctx, c) // a failed look keeps the last count
		}()
	}
	return int(min(w.online.Load(), 1)), nil
}

// refresh counts the primary's replicas online.
func (w *waiter) refresh(ctx context.Context, c *redis.Client) error {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("redis replicas: %w", err)
	}
	w.saw(parseReplication(info))
	return nil
}

// saw notes the replicas online from INFO replication.
func (w *waiter) saw(info replication) {
	w.online.Store(int64(info.online))
	w.checked.Store(time.Now().UnixNano())
}

// replication is what INFO replication says of the primary.
type replication struct {
	online int    // replicas online and acknowledging the stream
	replid string // master_replid: a promoted replica takes a new one
}

func onlineReplicas(info string) int { return parseReplication(info).online }

func parseReplication(info string) replication {
	var r replication
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, fields, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if name == "master_replid" {
			r.replid = fields
		}
		if !ok || !strings.HasPrefix(name, "slave") || strings.Trim(name, "slave0123456789") != "" {
			continue
		}
		online, lag := false, 0
		for _, f := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "state":
				online = v == "online"
			case "lag":
				lag, _ = strconv.Atoi(v)
			}
		}
		// Redis can report lag=-1 for an ack within the second.
		if online && lag <= replicaMaxLag {
			r.online++
		}
	}
	return r
}

// join waits for the next round to start and end. A round starts only
// after the callers in it joined, so after their writes were answered.
func (w *waiter) join(ctx context.Context, c *redis.Client, n int) error {
	w.mu.Lock()
	rd := w.next
	if rd == nil {
		rd = &round{done: make(chan struct{})}
		w.next = rd
	}
	rd.need = max(rd.need, n)
	if !w.busy {
		w.busy = true
		go w.rounds(c)
	}
	w.mu.Unlock()
	select {
	case <-rd.done:
		return rd.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rounds runs rounds until no caller waits.
func (w *waiter) rounds(c *redis.Client) {
	for {
		w.mu.Lock()
		rd := w.next
		w.next = nil
		if rd == nil {
			w.busy = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		rd.err = w.barrier(c, rd.need)
		close(rd.done)
	}
}

// barrier is one round trip: PUBLISH then WAIT on one connection, then
// INFO replication to learn whether the server is the primary the last
// round saw. A client that has moved to a promoted replica would
// otherwise confirm, on the new primary, writes the old one answered
// and the failover lost; the first round there is refused instead.
func (w *waiter) barrier(c *redis.Client, n int) error {
	timeout := time.Duration(w.timeout.Load())
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	var wait *redis.Cmd
	var info *redis.StringCmd
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Publish(ctx, barrierChannel, "")
		wait = p.Do(ctx, "wait", n, timeout.Milliseconds())
		info = p.Info(ctx, "replication")
		return nil
	})
	if err != nil { // the first command's error
		return fmt.Errorf("redis wait for %d replica(s): %w", n, err)
	}
	got, _ := wait.Int64()
	repl := parseReplication(info.Val())
	w.saw(repl)
	w.mu.Lock()
	last := w.replid
	w.replid = repl.replid
	w.mu.Unlock()
	if last != "" && last != repl.replid {
		return fmt.Errorf("%w: the primary changed since the last wait", ErrNotReplicated)
	}
	if got < int64(n) {
		return fmt.Errorf("%w: %d of %d within %v", ErrNotReplicated, got, n, timeout)
	}
	return nil
}
