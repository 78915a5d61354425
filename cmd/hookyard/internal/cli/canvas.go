package cli

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/output"
	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
)

// canvasView is what the chain and group commands show of either.
type canvasView struct {
	id, state, error  string
	created, finished *timestamppb.Timestamp
	tasks             []*jobsv1.Task
	callback          *jobsv1.Task
}

func (v canvasView) rows() [][2]string {
	rows := [][2]string{{"ID", v.id}, {"State", v.state}, {"Error", output.Or(v.error)},
		{"Created", output.Time(v.created)}, {"Finished", output.Time(v.finished)}}
	task := func(t *jobsv1.Task) string {
		return fmt.Sprintf("%s  %s  %s", t.GetId(), output.Or(t.GetName()), output.Or(t.GetState()))
	}
	for i, t := range v.tasks {
		rows = append(rows, [2]string{fmt.Sprintf("Task %d", i+1), task(t)})
	}
	if v.callback != nil {
		rows = append(rows, [2]string{"Callback", task(v.callback)})
	}
	return rows
}

// canvasCalls are the calls of one kind of canvas; the message they take
// and return is a Chain or a Group.
type canvasCalls[M proto.Message] struct {
	create func(context.Context, jobsv1.CanvasServiceClient, M) (M, error)
	get    func(context.Context, jobsv1.CanvasServiceClient, string) (M, error)
	cancel func(context.Context, jobsv1.CanvasServiceClient, string) (M, error)
	// list returns a page: the response (for -o json), its items and the
	// next page token.
	list  func(ctx context.Context, c jobsv1.CanvasServiceClient, size int32, token string) (proto.Message, []M, string, error)
	view  func(M) canvasView
	empty func() M
}

func canvasCmd[M proto.Message](a *app, kind, short, example string, calls canvasCalls[M]) *cobra.Command {
	cmd := &cobra.Command{Use: kind + "s", Aliases: []string{kind}, Args: args(), Short: short}
	show := func(m M) error { return a.out().Message(m, calls.view(m).rows()) }
	create := &cobra.Command{
		Use: "create JSON", Short: "Create a " + kind + " from its JSON (as POST /v1/" + kind + "s takes it), or @file", Args: args("JSON"),
		Example: example,
		RunE: func(cmd *cobra.Command, in []string) error {
			b, err := readArg(in[0])
			if err != nil {
				return usagef("%s: %v", kind, err)
			}
			m := calls.empty()
			if err := protojson.Unmarshal(b, m); err != nil {
				return usagef("not a %s: %v", kind, err)
			}
			c, err := a.clients.Canvas()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := calls.create(ctx, c, m)
			if err != nil {
				return err
			}
			return show(res)
		},
	}
	byID := func(use, short string, call func(context.Context, jobsv1.CanvasServiceClient, string) (M, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: args("ID"),
			RunE: func(cmd *cobra.Command, in []string) error {
				c, err := a.clients.Canvas()
				if err != nil {
					return err
				}
				ctx, cancel := a.call(cmd)
				defer cancel()
				res, err := call(ctx, c, in[0])
				if err != nil {
					return err
				}
				return show(res)
			},
		}
	}
	var p paging
	list := &cobra.Command{
		Use: "list", Short: "List " + kind + "s, newest first", Args: args(),
		Example: "  hookyard " + kind + "s list --page-size 10",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.Canvas()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, items, next, err := calls.list(ctx, c, p.size, p.token)
			if err != nil {
				return err
			}
			var rows [][]string
			for _, m := range items {
				v := calls.view(m)
				n := strconv.Itoa(len(v.tasks))
				if v.callback != nil {
					n += "+callback"
				}
				rows = append(rows, []string{v.id, v.state, n, output.Time(v.created), output.Cut(output.Or(v.error), 40)})
			}
			return a.out().List(res, []string{"ID", "STATE", "TASKS", "CREATED", "ERROR"}, rows, next)
		},
	}
	p.flags(list)
	cmd.AddCommand(create, list,
		byID("get ID", "Show a "+kind+" with its tasks", calls.get),
		byID("cancel ID", "Cancel a "+kind+": tasks not started never run, running ones are told to stop", calls.cancel))
	return cmd
}

func (a *app) chainsCmd() *cobra.Command {
	return canvasCmd(a, "chain", "Run tasks one after another (jobs)",
		`  hookyard chains create '{"id":"order-7","resultArg":"previous","tasks":[{"name":"reserve"},{"name":"charge"},{"name":"ship"}]}'
  hookyard tasks wait order-7-3`,
		canvasCalls[*jobsv1.Chain]{
			create: func(ctx context.Context, c jobsv1.CanvasServiceClient, m *jobsv1.Chain) (*jobsv1.Chain, error) {
				return c.CreateChain(ctx, &jobsv1.CreateChainRequest{Chain: m})
			},
			get: func(ctx context.Context, c jobsv1.CanvasServiceClient, id string) (*jobsv1.Chain, error) {
				return c.GetChain(ctx, &jobsv1.GetChainRequest{Id: id})
			},
			cancel: func(ctx context.Context, c jobsv1.CanvasServiceClient, id string) (*jobsv1.Chain, error) {
				return c.CancelChain(ctx, &jobsv1.CancelChainRequest{Id: id})
			},
			list: func(ctx context.Context, c jobsv1.CanvasServiceClient, size int32, token string) (proto.Message, []*jobsv1.Chain, string, error) {
				res, err := c.ListChains(ctx, &jobsv1.ListChainsRequest{PageSize: size, PageToken: token})
				return res, res.GetChains(), res.GetNextPageToken(), err
			},
			view: func(m *jobsv1.Chain) canvasView {
				return canvasView{m.GetId(), m.GetState(), m.GetError(), m.GetCreateTime(), m.GetFinishTime(), m.GetTasks(), nil}
			},
			empty: func() *jobsv1.Chain { return &jobsv1.Chain{} },
		})
}

func (a *app) groupsCmd() *cobra.Command {
	return canvasCmd(a, "group", "Run tasks at once, with a callback when all succeeded (a chord) (jobs)",
		`  hookyard groups create '{"id":"resize-42","resultArg":"results","tasks":[{"name":"resize","args":{"w":64}},{"name":"resize","args":{"w":512}}],"callback":{"name":"publish"}}'
  hookyard tasks wait resize-42-callback`,
		canvasCalls[*jobsv1.Group]{
			create: func(ctx context.Context, c jobsv1.CanvasServiceClient, m *jobsv1.Group) (*jobsv1.Group, error) {
				return c.CreateGroup(ctx, &jobsv1.CreateGroupRequest{Group: m})
			},
			get: func(ctx context.Context, c jobsv1.CanvasServiceClient, id string) (*jobsv1.Group, error) {
				return c.GetGroup(ctx, &jobsv1.GetGroupRequest{Id: id})
			},
			cancel: func(ctx context.Context, c jobsv1.CanvasServiceClient, id string) (*jobsv1.Group, error) {
				return c.CancelGroup(ctx, &jobsv1.CancelGroupRequest{Id: id})
			},
			list: func(ctx context.Context, c jobsv1.CanvasServiceClient, size int32, token string) (proto.Message, []*jobsv1.Group, string, error) {
				res, err := c.ListGroups(ctx, &jobsv1.ListGroupsRequest{PageSize: size, PageToken: token})
				return res, res.GetGroups(), res.GetNextPageToken(), err
			},
			view: func(m *jobsv1.Group) canvasView {
				return canvasView{m.GetId(), m.GetState(), m.GetError(), m.GetCreateTime(), m.GetFinishTime(), m.GetTasks(), m.GetCallback()}
			},
			empty: func() *jobsv1.Group { return &jobsv1.Group{} },
		})
}
