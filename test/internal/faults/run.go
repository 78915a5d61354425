// Package faults sends webhooks through the real suite while it breaks
// it: each service killed with SIGKILL and restarted, the broker cut off
// by a TCP proxy, Redis restarted. It then counts what was acknowledged,
// delivered, duplicated and lost.
package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/test/internal/sink"
	"github.com/hookyard/hookyard/test/internal/suite"
)

// Config says how hard to push.
type Config struct {
	N            int           // webhooks to send
	Concurrency  int           // senders at once
	FailRate     float64       // fraction of deliveries the subscriber answers 503
	Gap          time.Duration // between two faults
	BrokerCut    time.Duration // how long the broker is unreachable
	RestartRedis bool          // run a Redis of our own and restart it
	// RestartRabbit runs a RabbitMQ node of our own (rabbitmq-server,
	// own node name and ports) and restarts it; otherwise the shared
	// broker is used in a vhost of its own and only cut off.
	RestartRabbit bool
	Drain         time.Duration // how long delivery may take after the last send
	Out           io.Writer
}

// Report holds the figures of a run.
type Report struct {
	Sent, Acknowledged, GaveUp  int
	Delivered, Duplicated, Lost int
	TasksEnded, TasksNotEnded   int
	// NotEnded are the events whose task had not ended when the wait ran out.
	NotEnded                       []string
	SubscriberRequests, Answered5x int64
	Faults                         []string
	SendTime, DrainTime            time.Duration
}

// Run performs one run. It returns an error when the run could not be
// done; lost deliveries or unfinished tasks are in the report.
func Run(ctx context.Context, cfg Config) (rep Report, err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Out, format+"\n", args...) }
	dir, err := os.MkdirTemp("", "hookyard-faults-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)

	redisURL := ""
	var rdb *Redis
	if cfg.RestartRedis {
		if rdb, err = StartRedis(ctx, dir); err != nil {
			return rep, err
		}
		defer rdb.Stop()
		redisURL = rdb.URL()
		logf("own Redis at %s (append-only)", redisURL)
	}

	id := suite.NewID()
	base, _ := url.Parse(envOr("HOOKYARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
	vhost := id
	var rmq *Rabbit
	if cfg.RestartRabbit {
		logf("starting a RabbitMQ node of our own (a minute or more on a loaded machine)")
		if rmq, err = StartRabbit(ctx, filepath.Join(dir, "rabbitmq"), id); err != nil {
			return rep, err
		}
		defer rmq.Stop()
		base, _ = url.Parse(rmq.URL())
		vhost = ""
	} else {
		if err := suite.AddVHost(ctx, vhost); err != nil {
			return rep, err
		}
		defer func() { _ = suite.DeleteVHost(context.Background(), vhost) }()
	}
	target := base.Host
	if base.Port() == "" {
		target += ":5672"
	}
	proxy, err := rabbittest.Listen(target)
	if err != nil {
		return rep, err
	}
	defer proxy.Close()
	base.Host = proxy.Addr()

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

	tenant, key := "t"+id, "key-"+suite.RandHex(16)
	logf("building and starting the four services (vhost %q through a proxy at %s)", vhost, proxy.Addr())
	st, err := suite.Start(ctx, dir, suite.Options{
		ID: id, Keys: map[string]string{tenant: key},
		AMQPURL: suite.VHostURL(base.String(), vhost), RedisURL: redisURL, Logf: logf,
		Env: map[string]string{
			// Enough retries that a 20 % failing subscriber is reached
			// (0.2^13 per message), spaced for a short run.
			"HOOKYARD_RETRY_SCHEDULE": "1s,1s,2s,2s,5s,5s,10s,10s,10s,15s,15s,30s",
		},
	})
	if err != nil {
		return rep, err
	}
	defer st.Close()
	defer func() {
		if err != nil {
			logf("%s", st.Logs())
		}
	}()

	fl, err := newFlow(ctx, st, id, key, sub, tasks)
	if err != nil {
		return rep, err
	}

	// Faults, one after another, while the webhooks are sent.
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		step := func(name string, fn func() error) { rep.step(ctx, cfg.Gap, name, fn, logf) }
		for _, name := range suite.Names {
			svc := st.Services[name]
			step("kill -9 "+name+", restart", func() error {
				if err := svc.Kill(); err != nil {
					return err
				}
				return svc.Start(ctx)
			})
		}
		step(fmt.Sprintf("cut the broker for %v", cfg.BrokerCut), func() error {
			proxy.Cut()
			select {
			case <-ctx.Done():
			case <-time.After(cfg.BrokerCut):
			}
			proxy.Restore()
			return waitReady(ctx, st)
		})
		if rmq != nil {
			step("restart RabbitMQ", func() error {
				if err := rmq.Restart(ctx); err != nil {
					return err
				}
				return waitReady(ctx, st)
			})
		}
		if rdb != nil {
			step("restart Redis", func() error {
				if err := rdb.Restart(ctx); err != nil {
					return err
				}
				return waitReady(ctx, st)
			})
		}
	}()

	ids := fl.send(ctx, cfg.N, cfg.Concurrency, nil, &rep, logf)
	logf("sent %d in %v: acknowledged %d, gave up %d; waiting for the faults to end", cfg.N, rep.SendTime.Round(time.Second), rep.Acknowledged, rep.GaveUp)
	<-faultsDone

	drainStart := time.Now()
	fl.drain(ctx, ids, cfg.Drain, &rep, logf)
	rep.TasksEnded, rep.NotEnded = taskStates(ctx, st, key, fl.trigger, ids, cfg.Drain-time.Since(drainStart), logf)
	rep.TasksNotEnded = len(rep.NotEnded)
	rep.DrainTime = time.Since(drainStart)
	rep.SubscriberRequests, rep.Answered5x, _, _ = sub.Stats()
	for _, s := range st.Services {
		if err := s.Healthy(ctx); err != nil {
			return rep, fmt.Errorf("after the run: %w", err)
		}
	}
	return rep, nil
}

// taskStates waits until the task of every event has ended; it returns
// how many did and the events whose task did not.
func taskStates(ctx context.Context, st *suite.Stack, key, trigger string, ids []string, wait time.Duration, logf func(string, ...any)) (ended int, notEnded []string) {
	pending := append([]string(nil), ids...)
	deadline := time.Now().Add(max(wait, time.Minute))
	for {
		var mu sync.Mutex
		var still []string
		work := make(chan string)
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for evt := range work {
					var task struct{ State string }
					err := st.Jobs().JSON(ctx, "GET", "/v1/tasks/"+url.PathEscape(trigger+"-"+evt), key, nil, http.StatusOK, &task)
					if err != nil || (task.State != "succeeded" && task.State != "failed" && task.State != "cancelled") {
						mu.Lock()
						still = append(still, evt)
						mu.Unlock()
					}
				}
			}()
		}
		for _, evt := range pending {
			work <- evt
		}
		close(work)
		wg.Wait()
		pending = still
		if len(pending) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return len(ids) - len(pending), pending
		}
		logf("waiting for %d of %d tasks to end", len(pending), len(ids))
		time.Sleep(5 * time.Second)
	}
}

func waitReady(ctx context.Context, st *suite.Stack) error {
	var errs error
	for _, s := range st.Services {
		errs = errors.Join(errs, suite.Eventually(ctx, suite.ReadyTimeout, func() error {
			code, _, err := s.Do(ctx, "GET", "/readyz", "", nil)
			if err != nil {
				return err
			}
			if code != 200 {
				return fmt.Errorf("%s /readyz: %d", s.Name, code)
			}
			return nil
		}))
	}
	return errs
}

// step waits gap, runs the fault fn and records how long it and the
// recovery it waits for took.
func (r *Report) step(ctx context.Context, gap time.Duration, name string, fn func() error, logf func(string, ...any)) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(gap):
	}
	start := time.Now()
	err := fn()
	line := fmt.Sprintf("%-28s %v", name, time.Since(start).Round(100*time.Millisecond))
	if err != nil {
		line += " ERROR: " + err.Error()
	}
	logf("fault: %s", line)
	r.Faults = append(r.Faults, line)
}

// Print writes the report as a table.
func (r Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "webhooks sent\t", r.Sent, "\t")
	fmt.Fprintln(tw, "acknowledged (2xx)\t", r.Acknowledged, "\t")
	fmt.Fprintln(tw, "never acknowledged\t", r.GaveUp, "\t")
	fmt.Fprintln(tw, "delivered\t", r.Delivered, "\t")
	fmt.Fprintln(tw, "duplicated (absorbed by webhook-id)\t", r.Duplicated, "\t")
	fmt.Fprintln(tw, "lost\t", r.Lost, "\t")
	fmt.Fprintln(tw, "tasks ended\t", r.TasksEnded, "\t")
	fmt.Fprintln(tw, "tasks not ended\t", r.TasksNotEnded, "\t")
	fmt.Fprintln(tw, "subscriber requests\t", r.SubscriberRequests, "\t")
	fmt.Fprintln(tw, "answered 503 on purpose\t", r.Answered5x, "\t")
	fmt.Fprintln(tw, "send time\t", r.SendTime.Round(time.Second), "\t")
	fmt.Fprintln(tw, "drain time\t", r.DrainTime.Round(time.Second), "\t")
	tw.Flush()
	for _, f := range r.Faults {
		fmt.Fprintln(w, "fault:", f)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// taskTarget is what the triggered http tasks call: it answers 204.
type taskTarget struct {
	srv *http.Server
	ln  net.Listener
}

func newTaskTarget() (*taskTarget, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &taskTarget{ln: ln, srv: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})}}
	go func() { _ = t.srv.Serve(ln) }()
	return t, nil
}

func (t *taskTarget) url() string { return "http://" + t.ln.Addr().String() + "/task" }
func (t *taskTarget) close()      { _ = t.srv.Close() }
