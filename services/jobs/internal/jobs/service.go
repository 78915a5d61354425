// Package jobs wires the jobs service. Task execution lands in a later
// change; until then the API is declared and every method answers
// Unimplemented, so no client mistakes it for a working queue.
package jobs

import (
	"context"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/platform/config"
)

type tasks struct {
	jobsv1.UnimplementedTaskServiceServer
}
type schedules struct {
	jobsv1.UnimplementedScheduleServiceServer
}
type queues struct {
	jobsv1.UnimplementedQueueServiceServer
}

// Service describes the jobs binary.
func Service() app.Service {
	return app.Service{
		Name:  "jobs",
		Ports: config.Ports{HTTP: ":8083", GRPC: ":9093"},
		Build: func(_ context.Context, rt *app.Runtime) error {
			jobsv1.RegisterTaskServiceServer(rt.Server.GRPC, tasks{})
			jobsv1.RegisterScheduleServiceServer(rt.Server.GRPC, schedules{})
			jobsv1.RegisterQueueServiceServer(rt.Server.GRPC, queues{})
			rt.Server.RegisterGateway(
				jobsv1.RegisterTaskServiceHandler,
				jobsv1.RegisterScheduleServiceHandler,
				jobsv1.RegisterQueueServiceHandler,
			)
			return nil
		},
	}
}
