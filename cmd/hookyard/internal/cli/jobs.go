package cli

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/output"
	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
)

func taskRows(t *jobsv1.Task) [][2]string {
	return [][2]string{
		{"ID", t.GetId()}, {"Name", t.GetName()}, {"Queue", output.Or(t.GetQueue())}, {"State", t.GetState()},
		{"Attempts", strconv.Itoa(int(t.GetAttempts()))}, {"Max retries", strconv.Itoa(int(t.GetMaxRetries()))},
		{"ETA", output.Time(t.GetEta())}, {"Created", output.Time(t.GetCreateTime())}, {"Finished", output.Time(t.GetFinishTime())},
		{"Error", output.Or(t.GetError())}, {"Result", output.Cut(jsonText(t.GetResult()), 200)},
	}
}

// taskFlags are the settings of a task given on the command line.
type taskFlags struct {
	args, queue, callback string
	eta                   time.Duration
	retries               int32
	soft, hard            time.Duration
}

func (f *taskFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.args, "args", "null", "arguments as JSON, or @file")
	fl.StringVar(&f.queue, "queue", "", "queue (default: the service's default queue)")
	fl.DurationVar(&f.eta, "in", 0, "run no earlier than this long from now")
	fl.Int32Var(&f.retries, "max-retries", 0, "retries after a failure (0: the service default)")
	fl.DurationVar(&f.soft, "soft-time-limit", 0, "soft time limit (the task's context is cancelled)")
	fl.DurationVar(&f.hard, "hard-time-limit", 0, "hard time limit (the lease ends)")
	fl.StringVar(&f.callback, "callback-url", "", "URL told of the task's end")
}

func (f *taskFlags) task(name string) (*jobsv1.Task, error) {
	v, err := jsonValue(f.args, "--args")
	if err != nil {
		return nil, err
	}
	t := &jobsv1.Task{Name: name, Args: v, Queue: f.queue, MaxRetries: f.retries, CallbackUrl: f.callback}
	if f.eta > 0 {
		t.Eta = timestamppb.New(time.Now().Add(f.eta))
	}
	if f.soft > 0 {
		t.SoftTimeLimit = durationpb.New(f.soft)
	}
	if f.hard > 0 {
		t.HardTimeLimit = durationpb.New(f.hard)
	}
	return t, nil
}

func (a *app) tasksCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "tasks", Aliases: []string{"task"}, Args: args(),
		Short: "Enqueue background tasks and follow them (jobs)",
	}
	var tf taskFlags
	var wait bool
	enqueue := &cobra.Command{
		Use: "enqueue NAME", Short: "Enqueue a task", Args: args("NAME"),
		Example: `  hookyard tasks enqueue http --args '{"url":"https://example.com/report","method":"POST"}'
  hookyard tasks enqueue send-report --args @args.json --queue reports --in 10m
  hookyard tasks enqueue http --args '{"url":"https://example.com"}' --wait || echo "task failed: $?"`,
		RunE: func(cmd *cobra.Command, in []string) error {
			t, err := tf.task(in[0])
			if err != nil {
				return err
			}
			c, err := a.clients.Tasks()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.CreateTask(ctx, &jobsv1.CreateTaskRequest{Task: t})
			if err != nil {
				return err
			}
			if wait {
				return a.waitTask(cmd, res.GetId(), 0)
			}
			return a.out().Message(res, taskRows(res))
		},
	}
	tf.register(enqueue)
	enqueue.Flags().BoolVar(&wait, "wait", false, "wait until the task ends (exit 7 if it failed or was cancelled)")

	get := &cobra.Command{
		Use: "get ID", Short: "Show a task", Args: args("ID"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Tasks()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.GetTask(ctx, &jobsv1.GetTaskRequest{Id: in[0]})
			if err != nil {
				return err
			}
			return a.out().Message(res, taskRows(res))
		},
	}
	var p paging
	var state, queue, name string
	list := &cobra.Command{
		Use: "list", Short: "List tasks", Args: args(),
		Example: `  hookyard tasks list --state failed --queue reports`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.Tasks()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ListTasks(ctx, &jobsv1.ListTasksRequest{PageSize: p.size, PageToken: p.token, State: state, Queue: queue, Name: name})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, t := range res.GetTasks() {
				rows = append(rows, []string{t.GetId(), t.GetName(), output.Or(t.GetQueue()), t.GetState(), strconv.Itoa(int(t.GetAttempts())), output.Time(t.GetCreateTime()), output.Cut(output.Or(t.GetError()), 40)})
			}
			return a.out().List(res, []string{"ID", "NAME", "QUEUE", "STATE", "ATTEMPTS", "CREATED", "ERROR"}, rows, res.GetNextPageToken())
		},
	}
	p.flags(list)
	list.Flags().StringVar(&state, "state", "", "pending, running, succeeded, failed or cancelled")
	list.Flags().StringVar(&queue, "queue", "", "only this queue")
	list.Flags().StringVar(&name, "name", "", "only tasks of this name")

	var waitFor time.Duration
	waitCmd := &cobra.Command{
		Use: "wait ID", Short: "Wait until a task ends; exit 7 if it failed or was cancelled", Args: args("ID"),
		Example: `  hookyard tasks wait 01J... --for 10m && echo done`,
		RunE:    func(cmd *cobra.Command, in []string) error { return a.waitTask(cmd, in[0], waitFor) },
	}
	waitCmd.Flags().DurationVar(&waitFor, "for", 0, "give up after this long (default: wait as long as it takes)")

	change := func(use, short string, call func(*cobra.Command, jobsv1.TaskServiceClient, string) (*jobsv1.Task, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: args("ID"),
			RunE: func(cmd *cobra.Command, in []string) error {
				c, err := a.clients.Tasks()
				if err != nil {
					return err
				}
				res, err := call(cmd, c, in[0])
				if err != nil {
					return err
				}
				return a.out().Message(res, taskRows(res))
			},
		}
	}
	cancelCmd := change("cancel ID", "Cancel a pending task, or ask a running one to stop", func(cmd *cobra.Command, c jobsv1.TaskServiceClient, id string) (*jobsv1.Task, error) {
		ctx, cancel := a.call(cmd)
		defer cancel()
		return c.CancelTask(ctx, &jobsv1.CancelTaskRequest{Id: id})
	})
	retry := change("retry ID", "Run a failed or cancelled task again", func(cmd *cobra.Command, c jobsv1.TaskServiceClient, id string) (*jobsv1.Task, error) {
		ctx, cancel := a.call(cmd)
		defer cancel()
		return c.RetryTask(ctx, &jobsv1.RetryTaskRequest{Id: id})
	})
	cmd.AddCommand(enqueue, get, list, waitCmd, cancelCmd, retry)
	return cmd
}

// terminal task states.
var terminal = map[string]bool{"succeeded": true, "failed": true, "cancelled": true}

// waitTask waits with WaitTask calls (each at most a minute) until the task
// ends or limit (0: none) passes.
func (a *app) waitTask(cmd *cobra.Command, id string, limit time.Duration) error {
	c, err := a.clients.Tasks()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	var deadline time.Time
	if limit > 0 {
		deadline = time.Now().Add(limit)
	}
	for {
		step := time.Minute
		if !deadline.IsZero() {
			step = min(step, time.Until(deadline))
			if step <= 0 {
				return exitError{ExitUnavailable, fmt.Errorf("task %s did not end within %s", id, limit)}
			}
		}
		cctx, cancel := cmdTimeout(ctx, step+a.timeout)
		t, err := c.WaitTask(cctx, &jobsv1.WaitTaskRequest{Id: id, Timeout: durationpb.New(step)})
		cancel()
		if err != nil {
			return err
		}
		if terminal[t.GetState()] {
			if err := a.out().Message(t, taskRows(t)); err != nil {
				return err
			}
			if t.GetState() != "succeeded" {
				return exitError{ExitTaskFailed, errors.New("task " + id + " " + t.GetState())}
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func (a *app) schedulesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "schedules", Aliases: []string{"schedule"}, Args: args(),
		Short: "Run tasks on a cron or interval schedule (jobs)",
	}
	var p paging
	list := &cobra.Command{
		Use: "list", Short: "List schedules", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.Schedules()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ListSchedules(ctx, &jobsv1.ListSchedulesRequest{PageSize: p.size, PageToken: p.token})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, s := range res.GetSchedules() {
				rows = append(rows, []string{s.GetId(), scheduleWhen(s), s.GetTask().GetName(), strconv.FormatBool(s.GetPaused()), output.Time(s.GetNextRunTime()), output.Time(s.GetLastRunTime())})
			}
			return a.out().List(res, []string{"ID", "WHEN", "TASK", "PAUSED", "NEXT RUN", "LAST RUN"}, rows, res.GetNextPageToken())
		},
	}
	p.flags(list)
	var tf taskFlags
	var cron, tz string
	var every time.Duration
	create := &cobra.Command{
		Use: "create TASK_NAME (--cron SPEC | --every DURATION)", Short: "Create a schedule", Args: args("TASK_NAME"),
		Example: `  hookyard schedules create cleanup --cron '0 3 * * *' --time-zone Europe/Berlin
  hookyard schedules create http --every 5m --args '{"url":"https://example.com/ping"}'`,
		RunE: func(cmd *cobra.Command, in []string) error {
			if (cron == "") == (every == 0) {
				return usagef("give exactly one of --cron and --every")
			}
			t, err := tf.task(in[0])
			if err != nil {
				return err
			}
			s := &jobsv1.Schedule{Cron: cron, TimeZone: tz, Task: t}
			if every > 0 {
				s.Interval = durationpb.New(every)
			}
			c, err := a.clients.Schedules()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.CreateSchedule(ctx, &jobsv1.CreateScheduleRequest{Schedule: s})
			if err != nil {
				return err
			}
			return a.out().Message(res, [][2]string{{"ID", res.GetId()}, {"When", scheduleWhen(res)}, {"Task", res.GetTask().GetName()}, {"Next run", output.Time(res.GetNextRunTime())}})
		},
	}
	tf.register(create)
	create.Flags().StringVar(&cron, "cron", "", "cron spec, e.g. '*/5 * * * *'")
	create.Flags().DurationVar(&every, "every", 0, "run at this interval")
	create.Flags().StringVar(&tz, "time-zone", "", "IANA time zone of --cron (default UTC)")
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a schedule", Args: args("ID"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Schedules()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.DeleteSchedule(ctx, &jobsv1.DeleteScheduleRequest{Id: in[0]})
			if err != nil {
				return err
			}
			return a.done(res, "Deleted schedule "+in[0])
		},
	}
	cmd.AddCommand(list, create, del)
	return cmd
}

func scheduleWhen(s *jobsv1.Schedule) string {
	if s.GetCron() != "" {
		w := "cron " + s.GetCron()
		if s.GetTimeZone() != "" {
			w += " " + s.GetTimeZone()
		}
		return w
	}
	return "every " + output.Duration(s.GetInterval())
}

func (a *app) queuesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "queues", Aliases: []string{"queue"}, Args: args(),
		Short: "Show task queues and pause or resume them (jobs)",
	}
	list := &cobra.Command{
		Use: "list", Short: "List queues with their depths", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.Queues()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ListQueues(ctx, &jobsv1.ListQueuesRequest{})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, q := range res.GetQueues() {
				rows = append(rows, []string{q.GetName(), itoa(q.GetReady()), itoa(q.GetRunning()), itoa(q.GetParked()), itoa(q.GetDead()), strconv.FormatBool(q.GetPaused())})
			}
			return a.out().List(res, []string{"QUEUE", "READY", "RUNNING", "PARKED", "DEAD", "PAUSED"}, rows, "")
		},
	}
	pause := func(use, short string, resume bool) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: args("NAME"),
			RunE: func(cmd *cobra.Command, in []string) error {
				c, err := a.clients.Queues()
				if err != nil {
					return err
				}
				ctx, cancel := a.call(cmd)
				defer cancel()
				var q *jobsv1.Queue
				if resume {
					q, err = c.ResumeQueue(ctx, &jobsv1.ResumeQueueRequest{Name: in[0]})
				} else {
					q, err = c.PauseQueue(ctx, &jobsv1.PauseQueueRequest{Name: in[0]})
				}
				if err != nil {
					return err
				}
				return a.out().Message(q, [][2]string{{"Queue", q.GetName()}, {"Paused", strconv.FormatBool(q.GetPaused())}, {"Ready", itoa(q.GetReady())}})
			},
		}
	}
	cmd.AddCommand(list, pause("pause NAME", "Stop handing out the queue's tasks", false), pause("resume NAME", "Hand out the queue's tasks again", true))
	return cmd
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
