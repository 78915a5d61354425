package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kinds of canvas.
const (
	Chain = "chain"
	Group = "group"
)

// ErrIDTaken is returned by CreateCanvas when a member's task id is taken
// by a task outside the canvas.
var ErrIDTaken = errors.New("a task with a member's id exists already")

// Member is a task of a canvas with its countdown, which for a member that
// waits for its turn counts from its release.
type Member struct {
	Spec  Spec
	Delay time.Duration
}

// CanvasSpec is a chain or group to create. A chain's steps after the
// first and a chord's callback wait for their turn; ResultArg, when set,
// is set on their Spec.
type CanvasSpec struct {
	Kind      string
	Members   []Member
	Callback  *Member
	ResultArg string
}

// Canvas is a chain or group as stored, with its member tasks (nil where a
// task has expired).
type Canvas struct {
	Tenant, ID, Kind string
	State, Error     string
	ResultArg        string
	Created          time.Time
	Finished         time.Time
	Members          []*Task
	Callback         *Task
	// MemberIDs are the ids of Members, and CallbackID the callback's ("" if
	// none), also for expired tasks.
	MemberIDs  []string
	CallbackID string
}

// MemberID is the task id of member n (from 1) of a canvas; n 0 is the
// callback.
func MemberID(canvas string, n int) string {
	if n == 0 {
		return canvas + "-callback"
	}
	return canvas + "-" + strconv.Itoa(n)
}

func (s *Store) canvas(tenant, id string) string { return s.Key("cv", tenant, id) }

// canvasIndex is the tenant's sorted set of canvas ids of kind by create
// time (unix ms); ListCanvases drops the ids whose canvas has expired.
func (s *Store) canvasIndex(tenant, kind string) string { return s.Key("cvs", kind, tenant) }

type canvasMember struct {
	ID    string   `json:"id"`
	Due   string   `json:"due"`
	Queue string   `json:"q"`
	Held  bool     `json:"held"`
	F     []string `json:"f"`
}

// CreateCanvas stores a canvas with all its member tasks in one script and
// returns it. It returns ErrExists, and the stored canvas, when the id is
// taken: the id is the idempotency key.
func (s *Store) CreateCanvas(ctx context.Context, tenant, id string, c CanvasSpec) (*Canvas, error) {
	now := s.cfg.Now()
	cvKey := s.canvas(tenant, id)
	var members []canvasMember
	add := func(n int, m Member, held bool) error {
		if held {
			m.Spec.ResultArg = c.ResultArg
		}
		raw, err := json.Marshal(m.Spec)
		if err != nil {
			return fmt.Errorf("encode task: %w", err)
		}
		mid := MemberID(id, n)
		at := now.Add(m.Delay)
		if m.Spec.ETA.After(at) {
			at = m.Spec.ETA
		}
		f := fields(raw, m.Spec)
		f = append(f, "cv", cvKey, "cvi", n)
		if held {
			var eta int64
			if !m.Spec.ETA.IsZero() {
				eta = ms(m.Spec.ETA)
			}
			f = append(f, "held", 1, "delay", m.Delay.Milliseconds(), "eta", eta)
		}
		cm := canvasMember{ID: mid, Due: strconv.FormatInt(ms(at), 10), Queue: m.Spec.Queue, Held: held}
		for _, v := range f {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			cm.F = append(cm.F, fmt.Sprint(v))
		}
		members = append(members, cm)
		return nil
	}
	for i, m := range c.Members {
		if err := add(i+1, m, c.Kind == Chain && i > 0); err != nil {
			return nil, err
		}
	}
	cb := "0"
	if c.Callback != nil {
		cb = "1"
		if err := add(0, *c.Callback, true); err != nil {
			return nil, err
		}
	}
	pass := "0"
	if c.ResultArg != "" {
		pass = "1"
	}
	cf, err := json.Marshal([]string{"kind", c.Kind, "n", strconv.Itoa(len(c.Members)), "state", Running,
		"created", strconv.FormatInt(ms(now), 10), "tenant", tenant, "mp", id + "-",
		"tp", s.task(tenant, ""), "dp", s.done(tenant, ""), "step", "1", "ended", "0", "cb", cb, "pass", pass,
		"rarg", c.ResultArg})
	if err != nil {
		return nil, err
	}
	mjson, err := json.Marshal(members)
	if err != nil {
		return nil, err
	}
	res, err := canvasScript.Run(ctx, s.rdb, []string{cvKey, s.index(tenant), s.sched(), s.queues(tenant), s.canvasIndex(tenant, c.Kind)},
		ms(now), MaxQueues, cf, mjson, s.task(tenant, ""), tenant, id).Result()
	if err != nil {
		return nil, fmt.Errorf("create %s %s: %w", c.Kind, id, err)
	}
	if taken, ok := res.(string); ok {
		return nil, fmt.Errorf("task %s: %w", taken, ErrIDTaken)
	}
	switch res.(int64) {
	case -1:
		return nil, ErrTooManyQueues
	case 0:
		got, err := s.GetCanvas(ctx, tenant, id, c.Kind)
		if err != nil {
			return nil, err
		}
		return got, ErrExists
	}
	for _, m := range c.Members {
		s.cfg.Observer.Enqueued(m.Spec.Queue, m.Spec.Name)
	}
	if c.Callback != nil {
		s.cfg.Observer.Enqueued(c.Callback.Spec.Queue, c.Callback.Spec.Name)
	}
	got, err := s.GetCanvas(ctx, tenant, id, c.Kind)
	return got, err
}

// GetCanvas reads a canvas of kind with its member tasks; ErrNotFound if
// there is none of that kind.
func (s *Store) GetCanvas(ctx context.Context, tenant, id, kind string) (*Canvas, error) {
	h, err := s.rdb.HGetAll(ctx, s.canvas(tenant, id)).Result()
	if err != nil {
		return nil, fmt.Errorf("get %s %s: %w", kind, id, err)
	}
	if len(h) == 0 || h["kind"] != kind {
		return nil, ErrNotFound
	}
	n, _ := strconv.Atoi(h["n"])
	num := func(k string) time.Time { v, _ := strconv.ParseInt(h[k], 10, 64); return fromMS(v) }
	c := &Canvas{Tenant: tenant, ID: id, Kind: kind, State: h["state"], Error: h["error"], ResultArg: h["rarg"],
		Created: num("created"), Finished: num("finished")}
	for i := 1; i <= n; i++ {
		c.MemberIDs = append(c.MemberIDs, MemberID(id, i))
	}
	ids := c.MemberIDs
	if h["cb"] == "1" {
		c.CallbackID = MemberID(id, 0)
		ids = append(ids[:len(ids):len(ids)], c.CallbackID)
	}
	pipe := s.rdb.Pipeline()
	hs := make([]*redis.MapStringStringCmd, len(ids))
	ls := make([]*redis.StringSliceCmd, len(ids))
	for i, mid := range ids {
		hs[i] = pipe.HGetAll(ctx, s.task(tenant, mid))
		ls[i] = pipe.LRange(ctx, s.log(tenant, mid), 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("get %s %s: %w", kind, id, err)
	}
	tasks := make([]*Task, len(ids))
	for i, mid := range ids {
		if len(hs[i].Val()) == 0 {
			continue
		}
		if tasks[i], err = decode(tenant, mid, hs[i].Val(), ls[i].Val()); err != nil {
			return nil, err
		}
	}
	c.Members = tasks[:n]
	if c.CallbackID != "" {
		c.Callback = tasks[n]
	}
	return c, nil
}

// CancelCanvas cancels a running canvas of kind: pending members are
// cancelled, running ones asked to stop, and nothing more is released. It
// returns the canvas after the call.
func (s *Store) CancelCanvas(ctx context.Context, tenant, id, kind string) (*Canvas, error) {
	st, err := cancelCanvasScript.Run(ctx, s.rdb, []string{s.canvas(tenant, id), s.sched(), s.outbox()},
		ms(s.cfg.Now()), s.cfg.ResultTTL.Milliseconds(), kind).Text()
	if err != nil {
		return nil, fmt.Errorf("cancel %s %s: %w", kind, id, err)
	}
	if st == "" {
		return nil, ErrNotFound
	}
	return s.GetCanvas(ctx, tenant, id, kind)
}

// ListCanvases pages through the tenant's canvases of kind, newest first,
// with their member tasks. The cursor is "<create ms>/<id>" of the last
// canvas of the previous page (ids with one create time come in reverse
// lexicographic order). Ids whose canvas has expired are removed from the
// index as they are met.
func (s *Store) ListCanvases(ctx context.Context, tenant, kind string, size int, cursor string) ([]*Canvas, string, error) {
	key := s.canvasIndex(tenant, kind)
	var out []*Canvas
	var stale []any
	// take reads the canvases of zs until the page and one more are full;
	// it reports whether they are.
	take := func(zs []redis.Z) (bool, error) {
		for _, z := range zs {
			if len(out) > size {
				return true, nil
			}
			id := z.Member.(string)
			c, err := s.GetCanvas(ctx, tenant, id, kind)
			if errors.Is(err, ErrNotFound) {
				stale = append(stale, id)
				continue
			}
			if err != nil {
				return true, err
			}
			c.Created = fromMS(int64(z.Score))
			out = append(out, c)
		}
		return len(out) > size, nil
	}
	max := "+inf"
	if cursor != "" {
		score, after, ok := strings.Cut(cursor, "/")
		if _, err := strconv.ParseInt(score, 10, 64); !ok || err != nil {
			return nil, "", ErrBadCursor
		}
		// First the ids of the cursor's create time that follow it.
		ties, err := s.rdb.ZRevRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{Max: score, Min: score}).Result()
		if err != nil {
			return nil, "", fmt.Errorf("list %ss: %w", kind, err)
		}
		for i, z := range ties {
			if z.Member.(string) == after {
				ties = ties[i+1:]
				break
			}
		}
		if _, err := take(ties); err != nil {
			return nil, "", err
		}
		max = "(" + score
	}
	batch := int64(size + 1)
	for off := int64(0); len(out) <= size; {
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{Max: max, Min: "-inf", Offset: off, Count: batch}).Result()
		if err != nil {
			return nil, "", fmt.Errorf("list %ss: %w", kind, err)
		}
		if _, err := take(zs); err != nil {
			return nil, "", err
		}
		if int64(len(zs)) < batch {
			break
		}
		off += int64(len(zs))
	}
	if len(stale) > 0 {
		if err := s.rdb.ZRem(ctx, key, stale...).Err(); err != nil {
			return nil, "", fmt.Errorf("prune %s index: %w", kind, err)
		}
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		last := out[size-1]
		next = strconv.FormatInt(ms(last.Created), 10) + "/" + last.ID
	}
	return out, next, nil
}
