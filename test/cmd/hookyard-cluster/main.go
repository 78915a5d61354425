// Command hookyard-cluster runs the four services against a three-node
// RabbitMQ cluster and a Redis primary with a replica and three Sentinels
// (deploy/local/cluster.sh), kills the RabbitMQ node the services are
// connected to while webhooks flow, brings it back, fails Redis over, and
// prints what was acknowledged, delivered, duplicated and lost. It exits 1
// if anything acknowledged was not delivered, a service process exited or
// a quorum queue was not replicated on every node, or a task triggered by
// the webhooks had not ended within -task-wait; each such task is
// described (the jobs API's answer and its raw Redis records) before the
// cluster is torn down. With -keep a failed run's cluster and services
// stay up until interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hookyard/hookyard/test/internal/faults"
)

func main() {
	cfg := faults.ClusterConfig{Out: os.Stdout}
	flag.IntVar(&cfg.N, "n", 5000, "webhooks to send at least (sending goes on until the faults are over)")
	flag.IntVar(&cfg.Concurrency, "c", 16, "senders at once")
	flag.Float64Var(&cfg.FailRate, "fail", 0.2, "fraction of deliveries the subscriber answers 503")
	flag.DurationVar(&cfg.Gap, "gap", 20*time.Second, "time between two faults")
	flag.BoolVar(&cfg.KillRedis, "kill-redis", false, "kill -9 the Redis primary instead of SENTINEL FAILOVER")
	flag.DurationVar(&cfg.Drain, "drain", 20*time.Minute, "how long delivery may take after the last send")
	flag.DurationVar(&cfg.TaskWait, "task-wait", 2*time.Minute, "how long the triggered tasks may take to end once every delivery is in")
	flag.StringVar(&cfg.RedisWaitReplicas, "redis-wait-replicas", "", "the services' HOOKYARD_REDIS_WAIT_REPLICAS (default: theirs, auto); 0 acknowledges without waiting for the Redis replica")
	flag.BoolVar(&cfg.Keep, "keep", false, "when the run fails, hold the cluster and services up for inspection until interrupted (Ctrl-C)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := faults.RunCluster(ctx, cfg)
	rep.Print(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
	if why := rep.Failed(); why != "" {
		fmt.Fprintln(os.Stderr, "cluster: FAILED:", why)
		os.Exit(1)
	}
}
