package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// A schedule entry whose task is gone (expired or deleted) is dropped by
// the pump, not claimed again every rearm period.
func TestPumpDropsEntriesOfMissingTasks(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	ctx := context.Background()
	sched := "{" + e.Config.KeyPrefix + "}:sched"
	ghost := e.Acme.Name + "|ghost|1"
	if err := e.Redis.ZAdd(ctx, sched, redis.Z{Score: float64(time.Now().UnixMilli()), Member: ghost}).Err(); err != nil {
		t.Fatal(err)
	}
	jobstest.WaitFor(t, 20*time.Second, "the entry of a missing task to be dropped", func() bool {
		_, err := e.Redis.ZScore(ctx, sched, ghost).Result()
		return err == redis.Nil
	})
}
