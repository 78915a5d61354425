package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/test/internal/sink"
	"github.com/hookyard/hookyard/test/internal/suite"
)

// ClusterConfig says how to run the suite against a broker cluster.
type ClusterConfig struct {
	N           int           // webhooks to send at least; sending goes on until the faults are over
	Concurrency int           // senders at once
	FailRate    float64       // fraction of deliveries the subscriber answers 503
	Gap         time.Duration // between two faults
	// KillRedis kills the Redis primary with SIGKILL instead of asking
	// the Sentinels for a failover (SENTINEL FAILOVER).
	KillRedis bool
	Drain     time.Duration // how long delivery may take after the last send
	// TaskWait bounds the wait for the triggered tasks to end once every
	// delivery is in; a task not ended by then fails the run and is
	// described (its API answer and raw Redis records).
	TaskWait time.Duration
	// RedisWaitReplicas is the services' HOOKYARD_REDIS_WAIT_REPLICAS
	// (their default, auto, when empty); "0" acknowledges without waiting
	// for the replica, as before that setting existed.
	RedisWaitReplicas string
	// Keep holds a failed run's cluster and services up, for inspection,
	// until ctx ends (an interrupt), then tears them down as usual.
	Keep bool
	Out  io.Writer
}

// ClusterReport holds the figures of a cluster run.
type ClusterReport struct {
	Report
	// Connections counts the services' AMQP connections per node just
	// before the kill; Killed is the node killed (the one with most).
	Connections map[string]int
	Killed      string
	// QuorumQueues counts the quorum queues, Replicated those with a
	// member on each of the three nodes (at start and after the run).
	QuorumQueues, Replicated           int
	QuorumQueuesAfter, ReplicatedAfter int
	// Restarted names the services whose process exited or changed
	// during the run; it must stay empty.
	Restarted []string
	// Breaker lists the changes of the dispatcher's circuit breakers and
	// Deferrals its deferrals by reason (both for the record).
	Breaker   []string
	Deferrals string
}

// Failed says why the run does not prove the cluster works ("" if it does).
func (r ClusterReport) Failed() string {
	var why []string
	if r.Lost > 0 {
		why = append(why, fmt.Sprintf("%d acknowledged webhooks lost", r.Lost))
	}
	if r.GaveUp > 0 {
		why = append(why, fmt.Sprintf("%d webhooks never acknowledged", r.GaveUp))
	}
	if r.TasksNotEnded > 0 {
		why = append(why, fmt.Sprintf("%d triggered tasks not ended", r.TasksNotEnded))
	}
	if len(r.Restarted) > 0 {
		why = append(why, "services exited: "+strings.Join(r.Restarted, ", "))
	}
	if r.QuorumQueues == 0 || r.Replicated < r.QuorumQueues || r.ReplicatedAfter < r.QuorumQueuesAfter {
		why = append(why, "quorum queues not replicated on every node")
	}
	return strings.Join(why, "; ")
}

// RunCluster starts a three-node RabbitMQ cluster and a Redis primary,
// replica and Sentinels with deploy/local/cluster.sh, runs the four
// services against them with webhooks flowing, kills the RabbitMQ node
// the services are connected to, brings it back, then fails Redis over.
// It returns an error when the run could not be done; losses and exits
// are in the report.
func RunCluster(ctx context.Context, cfg ClusterConfig) (rep ClusterReport, err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Out, format+"\n", args...) }
	dir, err := os.MkdirTemp("", "hookyard-cluster-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)

	cl, err := newCluster(filepath.Join(dir, "cluster"), logf)
	if err != nil {
		return rep, err
	}
	cl.out = cfg.Out
	logf("starting the cluster with %s (a few minutes on a loaded machine)", cl.script)
	env, err := cl.start(ctx)
	defer func() {
		if _, err := cl.run(context.Background(), "clean"); err != nil {
			logf("cluster clean: %v", err)
		}
	}()
	if err != nil {
		return rep, err
	}
	nodes, err := rabbit.ParseURLs(env["HOOKYARD_AMQP_URL"])
	if err != nil {
		return rep, fmt.Errorf("cluster.sh env: %w", err)
	}
	logf("HOOKYARD_AMQP_URL=%s\nHOOKYARD_REDIS_URL=%s", env["HOOKYARD_AMQP_URL"], env["HOOKYARD_REDIS_URL"])

	sub, err := sink.Start()
	if err != nil {
		return rep, err
	}
	defer sub.Close()
	sub.FailRate(cfg.FailRate)
	tasks, err := newTaskTarget()
	if err != nil {
		return rep, err
	}
	defer tasks.close()

	id := suite.NewID()
	tenant, key := "t"+id, "key-"+suite.RandHex(16)
	svcEnv := map[string]string{"HOOKYARD_RETRY_SCHEDULE": "1s,1s,2s,2s,5s,5s,10s,10s,10s,15s,15s,30s"}
	if cfg.RedisWaitReplicas != "" {
		svcEnv["HOOKYARD_REDIS_WAIT_REPLICAS"] = cfg.RedisWaitReplicas
	}
	st, err := suite.Start(ctx, dir, suite.Options{
		ID: id, Keys: map[string]string{tenant: key},
		AMQPURL: env["HOOKYARD_AMQP_URL"], RedisURL: env["HOOKYARD_REDIS_URL"], Logf: logf,
		Env: svcEnv,
	})
	if err != nil {
		return rep, err
	}
	defer st.Close()
	defer func() {
		if cfg.Keep && (err != nil || rep.Failed() != "") {
			hold(ctx, cl, st, env, id, tenant, key, rep, err, logf)
		}
	}()
	defer func() {
		if err != nil || rep.Failed() != "" {
			logf("%s", st.Logs())
		}
	}()
	fl, err := newFlow(ctx, st, id, key, sub, tasks)
	if err != nil {
		return rep, err
	}
	if rep.QuorumQueues, rep.Replicated, err = cl.quorumQueues(ctx); err != nil {
		return rep, err
	}
	logf("%d quorum queues, %d with a member on each node", rep.QuorumQueues, rep.Replicated)
	pids := map[string]int{}
	for name, s := range st.Services {
		pids[name] = s.PID()
	}

	start := time.Now()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	breakers := watchBreakers(wctx, st, start, logf)
	busy := make(chan struct{})
	step := func(name string, fn func() error) {
		rep.step(ctx, cfg.Gap, name, func() error {
			logf("fault at +%v: %s", time.Since(start).Round(time.Second), name)
			return fn()
		}, logf)
	}
	go func() {
		defer close(busy)
		step("kill -9 the services' RabbitMQ node", func() error {
			conns, err := cl.connections(ctx, nodes)
			if err != nil {
				return err
			}
			rep.Connections = conns
			n, most := 0, -1
			for i, u := range nodes {
				if c := rep.Connections[nodeName(u)]; c > most {
					n, most = i+1, c
				}
			}
			rep.Killed = nodeName(nodes[n-1])
			if _, err := cl.run(ctx, "kill", fmt.Sprint(n)); err != nil {
				return err
			}
			killed := time.Now()
			err = waitReady(ctx, st)
			rep.Faults = append(rep.Faults, fmt.Sprintf("  every service ready again %v after the kill", time.Since(killed).Round(100*time.Millisecond)))
			return err
		})
		step("restart the killed node", func() error {
			_, err := cl.run(ctx, "start")
			return err
		})
		if cfg.KillRedis {
			step("kill -9 the Redis primary", func() error {
				if _, err := cl.run(ctx, "kill-redis"); err != nil {
					return err
				}
				// The Sentinels notice after down-after-milliseconds
				// (2s) and promote the replica.
				if err := waitReady(ctx, st); err != nil {
					return err
				}
				if _, err := cl.run(ctx, "start"); err != nil {
					return err
				}
				return waitReady(ctx, st)
			})
		} else {
			step("Redis SENTINEL FAILOVER", func() error {
				if _, err := cl.run(ctx, "failover"); err != nil {
					return err
				}
				return waitReady(ctx, st)
			})
		}
		// Some load after the last fault too.
		select {
		case <-ctx.Done():
		case <-time.After(cfg.Gap):
		}
	}()
	ids := fl.send(ctx, cfg.N, cfg.Concurrency, busy, &rep.Report, logf)
	<-busy // the fault figures are complete
	logf("sent %d in %v: acknowledged %d, gave up %d", rep.Sent, rep.SendTime.Round(time.Second), rep.Acknowledged, rep.GaveUp)

	drainStart := time.Now()
	fl.drain(ctx, ids, cfg.Drain, &rep.Report, logf)
	rep.TasksEnded, rep.NotEnded = taskStates(ctx, st, key, fl.trigger, ids, cfg.TaskWait, logf)
	rep.TasksNotEnded = len(rep.NotEnded)
	if len(rep.NotEnded) > 0 {
		describeTasks(ctx, cl, st, env["HOOKYARD_REDIS_URL"], id, tenant, key, fl.trigger, rep.NotEnded, logf)
	}
	rep.DrainTime = time.Since(drainStart)
	rep.SubscriberRequests, rep.Answered5x, _, _ = sub.Stats()
	stopWatch()
	rep.Breaker = breakers()
	rep.Deferrals = deferrals(ctx, st)

	for _, name := range suite.Names {
		s := st.Services[name]
		if !s.Alive() || s.PID() != pids[name] {
			rep.Restarted = append(rep.Restarted, name)
		} else if err := s.Healthy(ctx); err != nil {
			rep.Restarted = append(rep.Restarted, name+" ("+err.Error()+")")
		}
	}
	if rep.QuorumQueuesAfter, rep.ReplicatedAfter, err = cl.quorumQueues(ctx); err != nil {
		return rep, err
	}
	return rep, nil
}

// hold keeps a failed run's cluster and services up until ctx ends,
// printing how to reach them.
func hold(ctx context.Context, cl *cluster, st *suite.Stack, env map[string]string, id, tenant, key string, rep ClusterReport, err error, logf func(string, ...any)) {
	rep.Print(cl.out)
	why := rep.Failed()
	if err != nil {
		why = err.Error()
	}
	logf(`==== -keep: the run failed (%s); cluster and services held up until interrupted (Ctrl-C) ====
cluster:   %s bash %s status
           HOME=%s rabbitmqctl -n <node> list_queues name messages_ready messages_unacknowledged
           redis-cli -p <primary port from status>   keys under {%s:jobs}, tenant %s
services:  jobs http://%s  dispatcher http://%s  ingress http://%s  cache http://%s
           curl -H 'Authorization: Bearer %s' http://%s/v1/tasks?pageSize=10
env:       HOOKYARD_AMQP_URL=%s
           HOOKYARD_REDIS_URL=%s`,
		why, cl.dirEnv(), cl.script, cl.dir(), id, tenant,
		st.Jobs().HTTPAddr, st.Dispatcher().HTTPAddr, st.Ingress().HTTPAddr, st.Cache().HTTPAddr,
		key, st.Jobs().HTTPAddr, env["HOOKYARD_AMQP_URL"], env["HOOKYARD_REDIS_URL"])
	<-ctx.Done()
	logf("interrupted: tearing down")
}

// Print writes the report as a table.
func (r ClusterReport) Print(w io.Writer) {
	r.Report.Print(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var nodes []string
	for n := range r.Connections {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		fmt.Fprintf(tw, "AMQP connections on %s before the kill\t %d\t\n", n, r.Connections[n])
	}
	fmt.Fprintf(tw, "node killed\t %s\t\n", r.Killed)
	fmt.Fprintf(tw, "quorum queues on 3 nodes, at start\t %d of %d\t\n", r.Replicated, r.QuorumQueues)
	fmt.Fprintf(tw, "quorum queues on 3 nodes, at the end\t %d of %d\t\n", r.ReplicatedAfter, r.QuorumQueuesAfter)
	fmt.Fprintf(tw, "service processes exited or restarted\t %d\t\n", len(r.Restarted))
	tw.Flush()
	fmt.Fprintln(w, "dispatcher deferrals by reason:", r.Deferrals)
	for _, b := range r.Breaker {
		fmt.Fprintln(w, "dispatcher", b)
	}
}

// cluster drives deploy/local/cluster.sh with a data directory of its own.
type cluster struct {
	script string
	env    []string
	logf   func(string, ...any)
	out    io.Writer
}

// dir is the cluster's data directory (CLUSTER_DIR).
func (c *cluster) dir() string { return strings.TrimPrefix(c.dirEnv(), "CLUSTER_DIR=") }

func (c *cluster) dirEnv() string { return c.env[len(c.env)-1] }

func newCluster(dir string, logf func(string, ...any)) (*cluster, error) {
	root, err := suite.RepoRoot()
	if err != nil {
		return nil, err
	}
	return &cluster{
		script: filepath.Join(root, "deploy", "local", "cluster.sh"),
		env:    append(os.Environ(), "CLUSTER_DIR="+dir),
		logf:   logf,
	}, nil
}

// run runs the script with args and returns its standard output; its
// progress lines (standard error) go to the log.
func (c *cluster) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{c.script}, args...)...)
	cmd.Env = c.env
	var out strings.Builder
	progress := &lineLog{logf: c.logf}
	cmd.Stdout = &out
	cmd.Stderr = progress
	// Should a server it starts keep the output open, Wait still returns.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("cluster.sh %s: %w: %s", strings.Join(args, " "), err, strings.Join(progress.lines, "; "))
	}
	return out.String(), nil
}

// lineLog logs what is written to it line by line and keeps the lines.
type lineLog struct {
	logf    func(string, ...any)
	partial []byte
	lines   []string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.logf("%s", line)
		l.lines = append(l.lines, line)
	}
}

// start starts the cluster and returns the settings it prints.
func (c *cluster) start(ctx context.Context) (map[string]string, error) {
	out, err := c.run(ctx, "start")
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	if env["HOOKYARD_AMQP_URL"] == "" || env["HOOKYARD_REDIS_URL"] == "" {
		return nil, fmt.Errorf("cluster.sh start printed no HOOKYARD_AMQP_URL or HOOKYARD_REDIS_URL: %q", out)
	}
	return env, nil
}

// queueInfo is a broker queue as cluster.sh queues lists it.
type queueInfo struct {
	Name    string
	Type    string
	Members []string
	Ready   int `json:"messages_ready"`
	Unacked int `json:"messages_unacknowledged"`
}

// queues lists the broker's queues.
func (c *cluster) queues(ctx context.Context) ([]queueInfo, error) {
	out, err := c.run(ctx, "queues")
	if err != nil {
		return nil, err
	}
	var qs []queueInfo
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		return nil, fmt.Errorf("cluster.sh queues: %w: %s", err, out)
	}
	return qs, nil
}

// quorumQueues counts the quorum queues and those with three members.
func (c *cluster) quorumQueues(ctx context.Context) (total, replicated int, err error) {
	qs, err := c.queues(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, q := range qs {
		if q.Type != "quorum" {
			continue
		}
		total++
		if len(q.Members) == 3 {
			replicated++
		} else {
			c.logf("quorum queue %s has members %v", q.Name, q.Members)
		}
	}
	return total, replicated, nil
}

// connections counts the client connections per node, by the AMQP port
// each is on.
func (c *cluster) connections(ctx context.Context, nodes []string) (map[string]int, error) {
	out, err := c.run(ctx, "connections")
	if err != nil {
		return nil, err
	}
	var conns []struct{ Port int }
	if err := json.Unmarshal([]byte(out), &conns); err != nil {
		return nil, fmt.Errorf("cluster.sh connections: %w: %s", err, out)
	}
	counts := map[string]int{}
	for _, u := range nodes {
		counts[nodeName(u)] = 0
	}
	for _, conn := range conns {
		counts[fmt.Sprintf("127.0.0.1:%d", conn.Port)]++
	}
	if len(conns) == 0 {
		return counts, errors.New("no client connections on the cluster")
	}
	return counts, nil
}

// nodeName is the host:port of a node's AMQP URL (cluster.sh always
// writes the port).
func nodeName(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Host
}
