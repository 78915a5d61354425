package api

import (
	"context"
	"sort"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
)

// Queues serves QueueService.
type Queues struct {
	jobsv1.UnimplementedQueueServiceServer
	Deps
}

// ListQueues lists the tenant's queues: ready notes from the broker,
// running and dead counts from Redis.
func (s *Queues) ListQueues(ctx context.Context, _ *jobsv1.ListQueuesRequest) (*jobsv1.ListQueuesResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	stats, err := s.Store.Queues(ctx, tenant)
	if err != nil {
		return nil, grpcErr(err)
	}
	sort.Slice(stats, func(i, j int) bool { return stats[i].Name < stats[j].Name })
	out := &jobsv1.ListQueuesResponse{}
	for _, q := range stats {
		p := &jobsv1.Queue{Name: q.Name, Running: q.Running, Dead: q.Dead}
		if ch, err := s.Bus.Conn().Channel(ctx); err == nil {
			if bq, err := ch.QueueDeclarePassive(s.Bus.TaskQueue(tenant, q.Name), true, false, false, false, nil); err == nil {
				p.Ready = int64(bq.Messages)
			}
			_ = ch.Close()
		}
		out.Queues = append(out.Queues, p)
	}
	return out, nil
}
