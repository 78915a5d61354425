// Package jobstest runs a complete jobs service for tests against the real
// RabbitMQ and Redis (HOOKYARD_AMQP_URL, HOOKYARD_REDIS_URL), under a Redis
// key prefix and queue names of its own, which it deletes when the test
// ends. It never flushes a database.
package jobstest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/testwait"
	"github.com/hookyard/hookyard/services/jobs/internal/jobs"
)

// RedisURL is the Redis the tests use.
func RedisURL() string {
	if u := os.Getenv("HOOKYARD_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// Tenant is a tenant with its API key.
type Tenant struct{ Name, Key string }

// Ctx authenticates gRPC calls as the tenant.
func (t Tenant) Ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+t.Key)
}

// Env is one jobs replica (or several sharing the same state).
type Env struct {
	ID          string
	Acme, Other Tenant
	Config      jobs.Config
	Redis       redis.UniversalClient
	Rabbit      *rabbit.Conn
	Replicas    []*Replica

	topology rabbit.Topology
	extra    []string // queues to delete
}

// Replica is one running jobs service.
type Replica struct {
	Jobs    *jobs.Jobs
	Conn    *grpc.ClientConn
	Tasks   jobsv1.TaskServiceClient
	Workers jobsv1.WorkerServiceClient
	Sched   jobsv1.ScheduleServiceClient
	Trig    jobsv1.TriggerServiceClient
	Queues  jobsv1.QueueServiceClient
	Canvas  jobsv1.CanvasServiceClient
	Base    string // REST base URL
	Stop    func()
}

// Options tune Start.
type Options struct {
	Heartbeat  time.Duration // default 300ms
	AllowCIDRs string        // default 127.0.0.0/8
	Replicas   int           // default 1
	MaxWaiters int           // default 1000
	RedisHook  redis.Hook    // if set, sees every command the replicas send
	// DispatcherAddr and ServiceKey hand completion callbacks to a
	// dispatcher (jobs.Config); empty: the service posts them itself.
	DispatcherAddr, ServiceKey string
	// Log, if set, receives the replicas' logs (default: discarded).
	Log slog.Handler
}

// Start runs the service with o.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Heartbeat == 0 {
		o.Heartbeat = 300 * time.Millisecond
	}
	if o.AllowCIDRs == "" {
		o.AllowCIDRs = "127.0.0.0/8"
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.MaxWaiters == 0 {
		o.MaxWaiters = 1000
	}
	id := fmt.Sprintf("t%x%04x", time.Now().UnixNano(), rand.N(1<<16))
	e := &Env{ID: id, Acme: Tenant{"acme-" + id, "acme-key-" + id}, Other: Tenant{"other-" + id, "other-key-" + id}}
	e.Config = jobs.Config{
		KeyPrefix: "hookyard:test:jobs:" + id, QueuePrefix: rabbittest.UniqueName(t, "jobs"),
		HTTPConcurrency: 8, Heartbeat: o.Heartbeat, ResultTTL: time.Hour, DeadTTL: time.Hour, MaxWaiters: o.MaxWaiters,
		DispatcherAddr: o.DispatcherAddr, ServiceKey: o.ServiceKey,
	}
	// A private events exchange: completion events stay out of the shared
	// one (and its unrouted queue).
	e.Config.EventsExchange = e.Config.QueuePrefix + ".events"
	e.topology = rabbit.Topology{Events: e.Config.EventsExchange, Unrouted: e.Config.QueuePrefix + ".unrouted"}
	rdb, err := redisconn.Open(RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	if o.RedisHook != nil {
		rdb.AddHook(o.RedisHook)
	}
	e.Redis = rdb
	ctx, cancel := context.WithCancel(context.Background())
	conn := rabbit.DialConfig(ctx, rabbittest.URL(), rabbit.Config{Setup: rabbit.DeclareFunc(rabbit.DeclareTopology, e.topology.Declare)})
	e.Rabbit = conn
	t.Cleanup(func() {
		e.cleanup()
		cancel()
		conn.Close()
		rdb.Close()
	})
	WaitFor(t, 15*time.Second, "broker connection", func() bool { return conn.Check(context.Background()) == nil })
	for range o.Replicas {
		e.Replicas = append(e.Replicas, e.startReplica(t, o))
	}
	return e
}

func (e *Env) startReplica(t testing.TB, o Options) *Replica {
	logs := o.Log
	if logs == nil {
		logs = slog.NewTextHandler(io.Discard, nil)
	}
	j, err := jobs.New(e.Config, jobs.Deps{Rabbit: e.Rabbit, Redis: e.Redis, AllowCIDRs: o.AllowCIDRs, Log: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := e.Rabbit.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Topology(ch); err != nil {
		t.Fatal(err)
	}
	ch.Close()
	keys, err := auth.ParseKeys(e.Acme.Name + ":" + e.Acme.Key + "," + e.Other.Name + ":" + e.Other.Key)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Name: "jobs", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Log: slog.New(slog.DiscardHandler), Keys: keys, ShutdownTimeout: 5 * time.Second})
	j.Register(srv)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = srv.Run(ctx); done <- struct{}{} }()
	go func() { _ = j.Run(ctx, time.Second); done <- struct{}{} }()
	cc, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r := &Replica{Jobs: j, Conn: cc, Base: "http://" + srv.HTTPAddr(),
		Tasks: jobsv1.NewTaskServiceClient(cc), Workers: jobsv1.NewWorkerServiceClient(cc),
		Sched: jobsv1.NewScheduleServiceClient(cc), Queues: jobsv1.NewQueueServiceClient(cc), Trig: jobsv1.NewTriggerServiceClient(cc),
		Canvas: jobsv1.NewCanvasServiceClient(cc)}
	stopped := false
	r.Stop = func() {
		if stopped {
			return
		}
		stopped = true
		cc.Close()
		cancel()
		<-done
		<-done
		j.Publisher.Close()
		_ = j.Close()
	}
	t.Cleanup(r.Stop)
	return r
}

// cleanup deletes the test's queues and keys.
func (e *Env) cleanup() {
	ctx := context.Background()
	prefix := "{" + e.Config.KeyPrefix + "}"
	queues := append([]string{e.Config.QueuePrefix + ".http", e.Config.QueuePrefix + ".triggers"}, e.extra...)
	for _, tn := range []Tenant{e.Acme, e.Other} {
		names, _ := e.Redis.SMembers(ctx, prefix+":q:"+tn.Name).Result()
		for _, q := range names {
			queues = append(queues, e.Config.QueuePrefix+".t."+tn.Name+"."+q)
		}
	}
	if c, err := amqp.Dial(rabbittest.URL()); err == nil {
		for _, q := range queues {
			for _, name := range []string{q, rabbit.DLQName(q)} {
				if ch, err := c.Channel(); err == nil {
					_, _ = ch.QueueDelete(name, false, false, false)
					ch.Close()
				}
			}
		}
		if ch, err := c.Channel(); err == nil {
			_, _ = ch.QueueDelete(e.topology.Unrouted, false, false, false)
			_ = ch.ExchangeDelete(e.topology.Events, false, false)
			_ = ch.ExchangeDelete(e.topology.Unrouted, false, false)
			ch.Close()
		}
		c.Close()
	}
	iter := e.Redis.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		e.Redis.Del(ctx, keys[:n]...)
		keys = keys[n:]
	}
}

// REST calls the first replica's gateway as tn and decodes the JSON answer.
func (e *Env) REST(t *testing.T, tn Tenant, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, e.Replicas[0].Base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tn.Key != "" {
		req.Header.Set("Authorization", "Bearer "+tn.Key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %s", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

// FreeAddr returns a loopback address nothing listens on (for a server
// the test starts later).
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// WaitFor polls cond until it holds or timeout passes, then fails the test.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Eventually(t, timeout, what, cond)
}

// WaitState waits until the task is in state and returns it. A task
// that does not exist yet counts as not there yet: triggers and
// schedules create theirs asynchronously.
func (e *Env) WaitState(t *testing.T, tn Tenant, id, state string, timeout time.Duration) *jobsv1.Task {
	t.Helper()
	var last *jobsv1.Task
	WaitFor(t, timeout, "task "+id+" to be "+state, func() bool {
		got, err := e.Replicas[0].Tasks.GetTask(tn.Ctx(context.Background()), &jobsv1.GetTaskRequest{Id: id})
		if status.Code(err) == codes.NotFound {
			return false
		}
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		last = got
		return got.GetState() == state
	})
	return last
}

// Events returns the completion events published from now on whose
// routing key matches pattern.
func (e *Env) Events(t testing.TB, pattern string) <-chan amqp.Delivery {
	t.Helper()
	ch, err := e.Rabbit.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	q := e.Config.QueuePrefix + ".capture." + fmt.Sprint(len(e.extra))
	e.extra = append(e.extra, q)
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, pattern, e.Config.EventsExchange, false, nil); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
