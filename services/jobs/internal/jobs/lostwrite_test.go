package jobs_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// Recovery bound of the lost-write tests: many heartbeat intervals and
// pump ticks, far below the schedule's NoteTimeout (15 minutes, the only
// other way back).
const lostWriteBound = 60 * time.Second

// loseWrite simulates a Redis failover that loses one write: the first
// script call it is armed for, on the task whose id is set, runs and is
// answered as usual, then what it changed in that task's records is put
// back as it was (whole task keys restored; the task's own members of
// shared sorted sets reverted; other shared keys restored whole). Redis
// replicates a script's effects as one transaction, so a failover loses
// a write whole or not at all.
type loseWrite struct {
	rdb   redis.UniversalClient // unhooked, for the snapshot and restore
	which func(keys []string) bool
	// until, if set, extends the loss to the writes up to and including
	// the first later one it matches (a failover window).
	until func(keys []string) bool
	mu    sync.Mutex
	id    string // task id; "" disarms
	open  string // task id of a window under way
	snap  []keySnap
	lost  chan struct{}
	// failedOver makes the primary's replication id read as changed.
	failedOver atomic.Bool
	reads      atomic.Int64 // of the replication id
}

// failover makes the service see a new Redis primary from now on, once
// it has seen the old one (or 30 s have passed: a service that never
// looks fails the test by not recovering).
func (l *loseWrite) failover() {
	for deadline := time.Now().Add(30 * time.Second); l.reads.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	l.failedOver.Store(true)
}

// isPrimaryRead: the script reading the replication id (one key, the
// schedule, and no arguments; the claim script has three).
func isPrimaryRead(cmd redis.Cmder, keys []string) bool {
	return len(keys) == 1 && strings.HasSuffix(keys[0], ":sched") && len(cmd.Args()) == 4
}

func newLoseWrite(t *testing.T, which func(keys []string) bool) *loseWrite {
	t.Helper()
	rdb, err := redisconn.Open(jobstest.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return &loseWrite{rdb: rdb, which: which, lost: make(chan struct{})}
}

// arm loses the next matching write on task id.
func (l *loseWrite) arm(id string) {
	l.mu.Lock()
	l.id = id
	l.mu.Unlock()
}

// isLeaseKeys: the lease script (nine keys, the second the lease set).
func isLeaseKeys(keys []string) bool { return len(keys) == 9 && strings.HasSuffix(keys[1], ":leases") }

// isEndKeys: the end script (six keys, the third the lease set).
func isEndKeys(keys []string) bool { return len(keys) == 6 && strings.HasSuffix(keys[2], ":leases") }

func (l *loseWrite) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook sends a plain pipeline's commands one at a time
// through ProcessHook: the store shares round trips between concurrent
// scripts, and the write to lose may be any of them.
func (l *loseWrite) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	one := l.ProcessHook(func(ctx context.Context, cmd redis.Cmder) error {
		return next(ctx, []redis.Cmder{cmd})
	})
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "multi" {
			return next(ctx, cmds)
		}
		var first error
		for _, cmd := range cmds {
			if err := one(ctx, cmd); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}

func (l *loseWrite) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		keys := scriptKeys(cmd)
		if isPrimaryRead(cmd, keys) {
			err := next(ctx, cmd)
			l.reads.Add(1)
			if c, ok := cmd.(*redis.Cmd); ok && err == nil && l.failedOver.Load() {
				c.SetVal("promoted-replica")
			}
			return err
		}
		l.mu.Lock()
		id, open := l.id, l.open
		start := id != "" && len(keys) > 0 && strings.HasSuffix(keys[0], ":"+id) && l.which(keys)
		end := open != "" && len(keys) > 0 && strings.HasSuffix(keys[0], ":"+open) && l.until(keys)
		if start {
			l.id = ""
		}
		if end {
			l.open = ""
		}
		l.mu.Unlock()
		if !start && !end {
			return next(ctx, cmd)
		}
		if start {
			l.snap = l.snapshot(ctx, keys, id)
		}
		err := next(ctx, cmd)
		if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			l.mu.Lock() // go-redis sends the script itself next
			if start {
				l.id = id
			} else {
				l.open = open
			}
			l.mu.Unlock()
			return err
		}
		if start && l.until != nil {
			l.mu.Lock()
			l.open = id
			l.mu.Unlock()
			return err
		}
		l.restore(ctx, l.snap)
		close(l.lost)
		return err
	}
}

func scriptKeys(cmd redis.Cmder) []string {
	a := cmd.Args()
	if (cmd.Name() != "evalsha" && cmd.Name() != "eval") || len(a) < 3 {
		return nil
	}
	var n int
	if _, err := fmt.Sscan(fmt.Sprint(a[2]), &n); err != nil || len(a) < 3+n {
		return nil
	}
	keys := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprint(a[3+i])
	}
	return keys
}

type keySnap struct {
	key, id string
	members map[string]float64 // zset of other tasks too: this task's members
	dump    string             // otherwise the whole key
	ttl     time.Duration
	exists  bool
	zset    bool
}

func (l *loseWrite) snapshot(ctx context.Context, keys []string, id string) []keySnap {
	var out []keySnap
	for _, k := range keys {
		s := keySnap{key: k, id: id}
		typ := l.rdb.Type(ctx, k).Val()
		if typ == "zset" && !strings.Contains(k, id) {
			s.zset, s.members = true, l.members(ctx, k, id)
		} else if d, err := l.rdb.Dump(ctx, k).Result(); err == nil {
			s.exists, s.dump = true, d
			s.ttl = max(l.rdb.PTTL(ctx, k).Val(), 0)
		}
		out = append(out, s)
	}
	return out
}

// members returns the members of zset k that name task id.
func (l *loseWrite) members(ctx context.Context, k, id string) map[string]float64 {
	m := map[string]float64{}
	it := l.rdb.ZScan(ctx, k, 0, "*|"+id+"*", 1000).Iterator()
	for it.Next(ctx) {
		member := it.Val()
		if !it.Next(ctx) {
			break
		}
		var score float64
		fmt.Sscan(it.Val(), &score)
		m[member] = score
	}
	return m
}

func (l *loseWrite) restore(ctx context.Context, snap []keySnap) {
	for _, s := range snap {
		switch {
		case s.zset:
			for m := range l.members(ctx, s.key, s.id) {
				if _, ok := s.members[m]; !ok {
					l.rdb.ZRem(ctx, s.key, m)
				}
			}
			for m, score := range s.members {
				l.rdb.ZAdd(ctx, s.key, redis.Z{Score: score, Member: m})
			}
		case s.exists:
			l.rdb.RestoreReplace(ctx, s.key, s.ttl, s.dump)
		default:
			l.rdb.Del(ctx, s.key)
		}
	}
}

// waitLost waits until the write has been lost.
func (l *loseWrite) waitLost(t *testing.T) {
	t.Helper()
	select {
	case <-l.lost:
	case <-time.After(30 * time.Second):
		t.Fatal("the write to lose was never made")
	}
}

// countingTarget is an http task's target that answers 204 and counts
// the calls.
func countingTarget(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	calls := new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, calls
}

// createHTTPTask enqueues an http task with id that calls url.
func createHTTPTask(t *testing.T, e *jobstest.Env, id, url string) {
	t.Helper()
	code, task := e.REST(t, e.Acme, "POST", "/v1/tasks", `{"id":"`+id+`","name":"http","args":{"url":"`+url+`"}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, task)
	}
}

// A Redis failover that loses the lease write of an http task the service
// runs itself: the task is pending again at the generation whose note was
// consumed, and its schedule entry is NoteTimeout (15 minutes) away. The
// runner's heartbeat or end finds the lease gone; the task must still end
// within a bound far below that.
func TestHTTPTaskEndsAfterItsLeaseWriteIsLost(t *testing.T) {
	t.Parallel()
	url, calls := countingTarget(t)
	lw := newLoseWrite(t, isLeaseKeys)
	e := jobstest.Start(t, jobstest.Options{RedisHook: lw})
	id := "lostlease-" + e.ID
	lw.arm(id)
	createHTTPTask(t, e, id, url)
	lw.waitLost(t)
	e.WaitState(t, e.Acme, id, "succeeded", lostWriteBound)
	if n := calls.Load(); n < 2 {
		t.Errorf("the target was called %d times, want the lost attempt and the one that ended", n)
	}
}

// An external worker's lease write is lost and the worker says nothing
// more (stuck). When the task is leased again (here: its schedule entry
// made due, as NoteTimeout would), the new lease must not get the token
// the stuck worker still holds, or the stuck worker could complete the
// new attempt (invariant 7: fencing).
func TestLeaseAfterALostLeaseWriteGetsANewToken(t *testing.T) {
	t.Parallel()
	lw := newLoseWrite(t, isLeaseKeys)
	e := jobstest.Start(t, jobstest.Options{Heartbeat: 2 * time.Second, RedisHook: lw})
	r := e.Replicas[0]
	ctx := e.Acme.Ctx(context.Background())
	id := "lostfence-" + e.ID
	lw.arm(id)
	if _, err := r.Tasks.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Id: id, Name: "report.build", Queue: "fence"}}); err != nil {
		t.Fatal(err)
	}
	actx, stopA := context.WithCancel(ctx)
	a := recvTask(t, actx, r.Workers, "fence", "worker-a")
	lw.waitLost(t)
	stopA() // stuck: no heartbeat, no end, until the very end

	// The schedule entry of the task's generation, due now.
	prefix := "{" + e.Config.KeyPrefix + "}"
	gen := e.Redis.HGet(context.Background(), prefix+":t:"+e.Acme.Name+":"+id, "gen").Val()
	if err := e.Redis.ZAdd(context.Background(), prefix+":sched", redis.Z{Score: float64(time.Now().UnixMilli()), Member: e.Acme.Name + "|" + id + "|" + gen}).Err(); err != nil {
		t.Fatal(err)
	}
	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	b := recvTask(t, bctx, r.Workers, "fence", "worker-b")
	if b.LeaseToken == a.LeaseToken {
		t.Errorf("the new lease got token %d, the one the stuck worker holds", b.LeaseToken)
	}
	_, err := r.Workers.CompleteTask(ctx, &jobsv1.CompleteTaskRequest{TaskId: id, LeaseToken: a.LeaseToken})
	if err == nil {
		t.Fatal("the stuck worker completed the new attempt")
	}
	if c := status.Code(err); c != codes.FailedPrecondition && c != codes.Aborted {
		t.Fatalf("stale complete: %v", err)
	}
	if _, err := r.Workers.CompleteTask(ctx, &jobsv1.CompleteTaskRequest{TaskId: id, LeaseToken: b.LeaseToken}); err != nil {
		t.Fatalf("b complete: %v", err)
	}
	e.WaitState(t, e.Acme, id, "succeeded", 10*time.Second)
}

// A lost end write of an http task leaves it running with the lease the
// runner no longer extends: the reaper ends that attempt and the task runs
// again (not a stranded state; kept as a regression test).
func TestHTTPTaskEndsAfterItsEndWriteIsLost(t *testing.T) {
	t.Parallel()
	url, calls := countingTarget(t)
	lw := newLoseWrite(t, isEndKeys)
	e := jobstest.Start(t, jobstest.Options{RedisHook: lw})
	id := "lostend-" + e.ID
	lw.arm(id)
	createHTTPTask(t, e, id, url)
	lw.waitLost(t)
	e.WaitState(t, e.Acme, id, "succeeded", lostWriteBound)
	if n := calls.Load(); n < 2 {
		t.Errorf("the target was called %d times, want the attempt whose end was lost and the one that ended", n)
	}
}

// A failover window that loses both the lease and the end of an http task
// (the service wrote both to the old primary): the task is pending at the
// generation whose note was consumed, nobody holds it, and its schedule
// entry is NoteTimeout (15 minutes) away. Once the service sees the new
// primary, the task must still end within a bound far below that.
func TestHTTPTaskEndsAfterItsLeaseAndEndWritesAreLost(t *testing.T) {
	t.Parallel()
	url, calls := countingTarget(t)
	lw := newLoseWrite(t, isLeaseKeys)
	lw.until = isEndKeys
	e := jobstest.Start(t, jobstest.Options{RedisHook: lw})
	id := "lostwindow-" + e.ID
	lw.arm(id)
	createHTTPTask(t, e, id, url)
	lw.waitLost(t)
	if code, task := e.REST(t, e.Acme, "GET", "/v1/tasks/"+id, ""); code != 200 || task["state"] != "pending" {
		t.Fatalf("after the lost writes: %d %v, want pending", code, task)
	}
	lw.failover()
	e.WaitState(t, e.Acme, id, "succeeded", lostWriteBound)
	if n := calls.Load(); n < 2 {
		t.Errorf("the target was called %d times, want the lost attempt and the one that ended", n)
	}
}
