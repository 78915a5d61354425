package redisconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/testwait"
)

// server is a redis-server of the test's own, on a free port.
type server struct {
	addr string
	cmd  *exec.Cmd
}

func startServer(t testing.TB, args ...string) *server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--logfile", ""}, args...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd}
	t.Cleanup(s.kill)
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	defer c.Close()
	testwait.Eventually(t, 30*time.Second, "redis-server up", func() bool { return c.Ping(context.Background()).Err() == nil })
	return s
}

// kill is kill -9.
func (s *server) kill() {
	if s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// proxy carries the replication link; paused, it holds what the primary
// sends, so a write can be answered by the primary and not reach the
// replica, deterministically.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	held   []byte // primary → replica bytes not yet passed on
	conns  []net.Conn
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	t.Cleanup(p.close)
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				down.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, down, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, down); up.Close() }() // replica → primary: acks, never held
			go p.hold(up, down)
		}
	}()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// hold passes the primary's stream on unless paused.
func (p *proxy) hold(up, down net.Conn) {
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			p.mu.Lock()
			p.held = append(p.held, buf[:n]...)
			p.cond.Broadcast()
			p.mu.Unlock()
			if err != nil {
				down.Close()
				return
			}
		}
	}()
	for {
		p.mu.Lock()
		for p.paused || len(p.held) == 0 {
			p.cond.Wait()
		}
		out := p.held
		p.held = nil
		p.mu.Unlock()
		if _, err := down.Write(out); err != nil {
			return
		}
	}
}

func (p *proxy) pause(on bool) {
	p.mu.Lock()
	p.paused = on
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *proxy) holds(s string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Contains(p.held, []byte(s))
}

// close drops the link and whatever it holds.
func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// pair is a primary and a replica that follows it through a proxy.
type pair struct {
	primary, replica *server
	link             *proxy
	rdb              *redis.Client // the primary, as a service opens it
}

func startPair(t testing.TB, rawURLOptions string) *pair {
	t.Helper()
	p := &pair{primary: startServer(t)}
	p.link = startProxy(t, p.primary.addr)
	host, port, _ := net.SplitHostPort(p.link.addr())
	p.replica = startServer(t, "--replicaof", host, port)
	rdb, err := Open("redis://" + p.primary.addr + "/0" + rawURLOptions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	p.rdb = rdb.(*redis.Client)
	ctx := context.Background()
	testwait.Eventually(t, 30*time.Second, "replica in sync", func() bool {
		info, err := p.rdb.Info(ctx, "replication").Result()
		return err == nil && onlineReplicas(info) == 1
	})
	return p
}

// failover kills the primary with whatever the link holds and promotes
// the replica, whose client it returns.
func (p *pair) failover(t testing.TB) *redis.Client {
	t.Helper()
	p.primary.kill()
	p.link.close()
	r := redis.NewClient(&redis.Options{Addr: p.replica.addr})
	t.Cleanup(func() { r.Close() })
	if err := r.ReplicaOf(context.Background(), "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	return r
}

// A write acknowledged after Replicated survives a failover: with the
// replication link stalled it is not acknowledged at all (without the
// wait it was, and the promoted replica did not have it).
func TestReplicatedStalledReplica(t *testing.T) {
	p := startPair(t, "")
	ctx := context.Background()
	if err := SetWait(p.rdb, WaitConfig{Replicas: AutoReplicas, Timeout: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	p.rdb.Set(ctx, "before", "1", 0)
	r := redis.NewClient(&redis.Options{Addr: p.replica.addr})
	defer r.Close()
	testwait.Eventually(t, 30*time.Second, "a first write replicated", func() bool { return r.Get(ctx, "before").Val() == "1" })
	if err := Replicated(ctx, p.rdb); err != nil {
		t.Fatalf("healthy replica: %v", err)
	}

	p.link.pause(true)
	if err := p.rdb.Set(ctx, "job", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	err := Replicated(ctx, p.rdb)
	acked := err == nil
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		t.Errorf("stalled replica: %v, want ErrNotReplicated", err)
	}

	r = p.failover(t)
	if n := r.Exists(ctx, "job").Val(); acked && n == 0 {
		t.Fatal("acknowledged write lost in the failover")
	}
}

// With the link stalled, Replicated waits rather than answering: once the
// barrier is held by the link, resuming it lets the wait end, and the
// write is on the replica.
func TestReplicatedWaitsForReplica(t *testing.T) {
	p := startPair(t, "?read_timeout=30s")
	ctx := context.Background()
	if err := SetWait(p.rdb, WaitConfig{Replicas: 1, Timeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	p.link.pause(true)
	if err := p.rdb.Set(ctx, "job", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Replicated(ctx, p.rdb) }()
	testwait.Eventually(t, 30*time.Second, "barrier held by the stalled link", func() bool { return p.link.holds(barrierChannel) })
	select {
	case err := <-done:
		t.Fatalf("Replicated answered (%v) while the replica lacked the write", err)
	default:
	}
	p.link.pause(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r := p.failover(t)
	if r.Exists(ctx, "job").Val() == 0 {
		t.Fatal("acknowledged write lost in the failover")
	}
}

// A client that moved to a promoted replica (as a Sentinel client does
// on +switch-master) must not confirm there a write the old primary
// answered and the failover discarded, although the new primary has a
// replica (the old primary, reconfigured) that confirms the wait.
func TestReplicatedRefusesNewPrimary(t *testing.T) {
	p := startPair(t, "")
	ctx := context.Background()
	var target atomic.Value
	target.Store(p.primary.addr)
	c := redis.NewClient(&redis.Options{Dialer: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target.Load().(string))
	}})
	defer c.Close()
	if err := SetWait(c, WaitConfig{Replicas: AutoReplicas, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	c.Set(ctx, "before", "1", 0)
	if err := Replicated(ctx, c); err != nil {
		t.Fatalf("healthy replica: %v", err)
	}

	p.link.pause(true)
	if err := c.Set(ctx, "job", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The failover: the replica is promoted without the write, the old
	// primary follows it (dropping the write), the client moves over.
	r := redis.NewClient(&redis.Options{Addr: p.replica.addr})
	defer r.Close()
	old := redis.NewClient(&redis.Options{Addr: p.primary.addr})
	defer old.Close()
	if err := r.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(p.replica.addr)
	if err := old.ReplicaOf(ctx, host, port).Err(); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 30*time.Second, "old primary following the new one", func() bool {
		info, err := r.Info(ctx, "replication").Result()
		return err == nil && onlineReplicas(info) == 1
	})
	target.Store(p.replica.addr)
	if err := old.Do(ctx, "client", "kill", "type", "normal", "skipme", "yes").Err(); err != nil {
		t.Fatal(err)
	}

	err := Replicated(ctx, c)
	acked := err == nil
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		t.Errorf("after the failover: %v, want ErrNotReplicated", err)
	}
	if n := r.Exists(ctx, "job").Val(); acked && n == 0 {
		t.Fatal("acknowledged write lost in the failover")
	}
	if err := Replicated(ctx, c); err != nil {
		t.Errorf("the next wait on the new primary: %v", err)
	}
}

// countHook counts what a client sends to the server.
type countHook struct{ cmds, trips atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		h.trips.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.cmds.Add(int64(len(cmds)))
		h.trips.Add(1)
		return next(ctx, cmds)
	}
}

// With no replica, Replicated costs no round trip: the replica count is
// looked up once, then at most once a second.
func TestReplicatedNoReplicaNoRoundTrip(t *testing.T) {
	s := startServer(t)
	rdb, err := Open("redis://" + s.addr + "/0")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	h := &countHook{}
	rdb.AddHook(h)
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil { // the connection's own handshake is not counted
		t.Fatal(err)
	}
	h.trips.Store(0)
	start := time.Now()
	const calls = 10000
	for range calls {
		if err := Replicated(ctx, rdb); err != nil {
			t.Fatal(err)
		}
	}
	limit := 2 + int64(time.Since(start)/replicaRefresh) // the first look, then one a second
	if got := h.trips.Load(); got > limit {
		t.Errorf("%d calls made %d round trips, want at most %d", calls, got, limit)
	}
	if err := SetWait(rdb, WaitConfig{Replicas: 0, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	before := h.trips.Load()
	for range calls {
		_ = Replicated(ctx, rdb)
	}
	if got := h.trips.Load() - before; got != 0 {
		t.Errorf("replicas 0: %d round trips", got)
	}
}

// Asked for a replica it does not have, the primary's WAIT times out and
// the write is reported unconfirmed.
func TestReplicatedMissingReplica(t *testing.T) {
	s := startServer(t)
	rdb, err := Open("redis://" + s.addr + "/0")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := SetWait(rdb, WaitConfig{Replicas: 1, Timeout: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := Replicated(context.Background(), rdb); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("got %v, want ErrNotReplicated", err)
	}
}

func TestWaitSettings(t *testing.T) {
	for in, want := range map[string]int{"": AutoReplicas, "auto": AutoReplicas, "AUTO": AutoReplicas, "0": 0, " 2 ": 2} {
		if got, err := ParseWaitReplicas(in); err != nil || got != want {
			t.Errorf("ParseWaitReplicas(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1", "one", "1.5"} {
		if _, err := ParseWaitReplicas(bad); err == nil {
			t.Errorf("ParseWaitReplicas(%q) accepted", bad)
		}
	}
	rdb, _ := Open("redis://127.0.0.1:1/0")
	defer rdb.Close()
	for _, bad := range []WaitConfig{{Replicas: 1}, {Replicas: -2, Timeout: time.Second}, {Replicas: 1, Timeout: time.Minute}} {
		if err := SetWait(rdb, bad); err == nil {
			t.Errorf("SetWait(%+v) accepted", bad)
		}
	}
	cl, _ := Open("redis+cluster://127.0.0.1:1")
	defer cl.Close()
	if err := SetWait(cl, WaitConfig{Replicas: 1, Timeout: time.Second}); err == nil || !strings.Contains(err.Error(), "Cluster") {
		t.Errorf("SetWait on a cluster client: %v", err)
	}
	if err := Replicated(context.Background(), cl); err != nil {
		t.Errorf("Replicated on a cluster client: %v", err)
	}
}

func TestOnlineReplicas(t *testing.T) {
	info := "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n" +
		"slave0:ip=127.0.0.1,port=1,state=online,offset=10,lag=0\r\n" +
		"slave1:ip=127.0.0.1,port=2,state=wait_bgsave,offset=0,lag=0\r\n" +
		"slave2:ip=127.0.0.1,port=3,state=online,offset=5,lag=9\r\n" +
		"slave3:ip=127.0.0.1,port=4,state=online,offset=10,lag=-1\r\n" +
		"master_replid:abc\r\nmaster_repl_offset:10\r\n"
	if got := parseReplication(info); got != (replication{online: 2, replid: "abc"}) {
		t.Errorf("parseReplication = %+v, want 2 online, replid abc", got)
	}
}

// BenchmarkReplicated is the cost of a write followed by Replicated, with
// no replica and with one (on loopback), one writer and many: trips/op
// counts the round trips beyond the write's own.
func BenchmarkReplicated(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, rdb *redis.Client, wait, parallel bool) {
		h := &countHook{}
		rdb.AddHook(h)
		if err := Replicated(ctx, rdb); err != nil { // the first look at the replicas
			b.Fatal(err)
		}
		op := func(key string) {
			if err := rdb.Set(ctx, key, "v", time.Minute).Err(); err != nil {
				b.Fatal(err)
			}
			if wait {
				if err := Replicated(ctx, rdb); err != nil {
					b.Fatal(err)
				}
			}
		}
		h.trips.Store(0)
		b.ResetTimer()
		if parallel {
			b.SetParallelism(16) // 16 × GOMAXPROCS writers
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				key := fmt.Sprintf("bench:%d", n.Add(1))
				for pb.Next() {
					op(key)
				}
			})
		} else {
			for b.Loop() {
				op("bench")
			}
		}
		b.ReportMetric(float64(h.trips.Load()-int64(b.N))/float64(b.N), "trips/op")
	}
	for _, replica := range []bool{false, true} {
		var rdb *redis.Client
		s := startServer(b)
		if replica { // straight to the primary, no proxy
			host, port, _ := net.SplitHostPort(s.addr)
			startServer(b, "--replicaof", host, port)
		}
		{
			c, err := Open("redis://" + s.addr + "/0")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			rdb = c.(*redis.Client)
			testwait.Eventually(b, 30*time.Second, "replica in sync", func() bool {
				info, err := rdb.Info(ctx, "replication").Result()
				return err == nil && (onlineReplicas(info) == 1) == replica
			})
		}
		name := map[bool]string{false: "no-replica", true: "one-replica"}[replica]
		if !replica {
			b.Run(name+"/Replicated-alone", func(b *testing.B) {
				for b.Loop() {
					if err := Replicated(ctx, rdb); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		for _, parallel := range []bool{false, true} {
			mode := map[bool]string{false: "1-writer", true: "many-writers"}[parallel]
			b.Run(name+"/"+mode+"/write-only", func(b *testing.B) { run(b, rdb, false, parallel) })
			b.Run(name+"/"+mode+"/write+Replicated", func(b *testing.B) { run(b, rdb, true, parallel) })
		}
	}
}
