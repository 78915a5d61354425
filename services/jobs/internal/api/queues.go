package api

import (
	"context"
	"sort"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// Queues serves QueueService.
type Queues struct {
	jobsv1.UnimplementedQueueServiceServer
	Deps
}

func (s *Queues) list(ctx context.Context, tenant string) ([]*jobsv1.Queue, error) {
	stats, err := s.Store.Queues(ctx, tenant)
	if err != nil {
		return nil, grpcErr(err)
	}
	sort.Slice(stats, func(i, j int) bool { return stats[i].Name < stats[j].Name })
	var out []*jobsv1.Queue
	for _, q := range stats {
		out = append(out, s.proto(ctx, tenant, q))
	}
	return out, nil
}

// proto adds the broker's ready count to q.
func (s *Queues) proto(ctx context.Context, tenant string, q store.QueueStats) *jobsv1.Queue {
	p := &jobsv1.Queue{Name: q.Name, Running: q.Running, Dead: q.Dead, Paused: q.Paused, Parked: q.Parked}
	if ch, err := s.Bus.Conn().Channel(ctx); err == nil {
		if bq, err := ch.QueueDeclarePassive(s.Bus.TaskQueue(tenant, q.Name), true, false, false, false, nil); err == nil {
			p.Ready = int64(bq.Messages)
		}
		_ = ch.Close()
	}
	return p
}

// ListQueues lists the tenant's queues: ready notes from the broker,
// running, dead and parked counts from Redis.
func (s *Queues) ListQueues(ctx context.Context, _ *jobsv1.ListQueuesRequest) (*jobsv1.ListQueuesResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	qs, err := s.list(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return &jobsv1.ListQueuesResponse{Queues: qs}, nil
}

func (s *Queues) one(ctx context.Context, tenant, name string) (*jobsv1.Queue, error) {
	qs, err := s.list(ctx, tenant)
	if err != nil {
		return nil, err
	}
	for _, q := range qs {
		if q.Name == name {
			return q, nil
		}
	}
	return &jobsv1.Queue{Name: name}, nil
}

// PauseQueue pauses a queue.
func (s *Queues) PauseQueue(ctx context.Context, r *jobsv1.PauseQueueRequest) (*jobsv1.Queue, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := ValidQueue(r.GetName()); err != nil {
		return nil, err
	}
	if err := s.Store.Pause(ctx, tenant, r.GetName()); err != nil {
		return nil, grpcErr(err)
	}
	return s.one(ctx, tenant, r.GetName())
}

// ResumeQueue resumes a queue.
func (s *Queues) ResumeQueue(ctx context.Context, r *jobsv1.ResumeQueueRequest) (*jobsv1.Queue, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if err := ValidQueue(r.GetName()); err != nil {
		return nil, err
	}
	if err := s.Store.Resume(ctx, tenant, r.GetName()); err != nil {
		return nil, grpcErr(err)
	}
	s.Pump.Wake()
	return s.one(ctx, tenant, r.GetName())
}
