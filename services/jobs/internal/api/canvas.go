package api

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// Limits of a canvas.
const (
	MaxChainSteps   = 100
	MaxGroupMembers = 1000
)

var (
	// A canvas id leaves room for the member suffix within a task id.
	canvasIDRe  = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,100}$`)
	resultArgRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// Canvas serves CanvasService: chains, groups and chords. The store moves
// them along; this checks what clients give and hands the members due now
// to the broker.
type Canvas struct {
	jobsv1.UnimplementedCanvasServiceServer
	Deps
}

// CreateChain creates a chain and enqueues its first step.
func (s *Canvas) CreateChain(ctx context.Context, r *jobsv1.CreateChainRequest) (*jobsv1.Chain, error) {
	c := r.GetChain()
	if c == nil {
		return nil, invalid("chain: required")
	}
	got, err := s.create(ctx, store.Chain, c.GetId(), c.GetTasks(), nil, c.GetResultArg())
	if err != nil {
		return nil, err
	}
	return chainProto(got), nil
}

// CreateGroup creates a group (a chord with a callback) and enqueues its
// members.
func (s *Canvas) CreateGroup(ctx context.Context, r *jobsv1.CreateGroupRequest) (*jobsv1.Group, error) {
	g := r.GetGroup()
	if g == nil {
		return nil, invalid("group: required")
	}
	if g.GetCallback() == nil && g.GetResultArg() != "" {
		return nil, invalid("resultArg: only with a callback")
	}
	got, err := s.create(ctx, store.Group, g.GetId(), g.GetTasks(), g.GetCallback(), g.GetResultArg())
	if err != nil {
		return nil, err
	}
	return groupProto(got), nil
}

func (s *Canvas) create(ctx context.Context, kind, id string, tasks []*jobsv1.Task, callback *jobsv1.Task, resultArg string) (*store.Canvas, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if id == "" {
		id = uuid.NewString()
	} else if !canvasIDRe.MatchString(id) {
		return nil, invalid("id: %q: 1 to 100 letters, digits, '.', '_', ':' or '-'", id)
	}
	limit := MaxGroupMembers
	if kind == store.Chain {
		limit = MaxChainSteps
	}
	if n := len(tasks); n == 0 || n > limit {
		return nil, invalid("tasks: %d, give 1 to %d", n, limit)
	}
	if resultArg != "" && !resultArgRe.MatchString(resultArg) {
		return nil, invalid("resultArg: %q: 1 to 64 letters, digits, '.', '_' or '-'", resultArg)
	}
	now := time.Now()
	spec := store.CanvasSpec{Kind: kind, ResultArg: resultArg}
	for i, t := range tasks {
		receives := ""
		if kind == store.Chain && i > 0 {
			receives = resultArg
		}
		m, err := s.member(fmt.Sprintf("tasks[%d]", i), t, now, receives)
		if err != nil {
			return nil, err
		}
		spec.Members = append(spec.Members, m)
	}
	if callback != nil {
		m, err := s.member("callback", callback, now, resultArg)
		if err != nil {
			return nil, err
		}
		spec.Callback = &m
	}
	// Every member joins the trace of the request that created the canvas.
	carry := trace.Carry(ctx)
	for i := range spec.Members {
		spec.Members[i].Spec.Trace = carry
	}
	if spec.Callback != nil {
		spec.Callback.Spec.Trace = carry
	}
	got, err := s.Store.CreateCanvas(ctx, tenant, id, spec)
	switch {
	case errors.Is(err, store.ErrExists):
		return got, nil // the id is the idempotency key
	case errors.Is(err, store.ErrIDTaken):
		return nil, status.Error(codes.AlreadyExists, err.Error())
	case err != nil:
		return nil, grpcErr(err)
	}
	// A chain's first step and a group's members are due at once (unless
	// they have a countdown or eta): take the fast path to the broker.
	for i, m := range spec.Members {
		if kind == store.Chain && i > 0 {
			break
		}
		if m.Delay > 0 || m.Spec.ETA.After(now) {
			continue
		}
		r := store.Ready{Tenant: tenant, ID: store.MemberID(id, i+1), Gen: 1}
		if err := s.Pump.PublishNew(ctx, r, m.Spec.Name, m.Spec.Queue); err != nil {
			s.Log.WarnContext(ctx, "publish new task; the pump will retry", "task_id", r.ID, "err", err)
			s.Pump.Wake()
		}
	}
	return got, nil
}

// member checks one task of a canvas. Its countdown is kept apart: for a
// member that waits for its turn it counts from its release. receives
// names the args field that gets passed results, if any.
func (s *Canvas) member(field string, t *jobsv1.Task, now time.Time, receives string) (store.Member, error) {
	var m store.Member
	if t == nil {
		return m, invalid("%s: required", field)
	}
	if t.GetId() != "" {
		return m, invalid("%s.id: must be unset; member ids are \"<id>-<n>\"", field)
	}
	if t.GetUniqueKey() != "" {
		return m, invalid("%s.uniqueKey: not allowed in a chain or group", field)
	}
	delay, err := duration(field+".countdown", t.GetCountdown())
	if err != nil {
		return m, err
	}
	if delay < 0 || delay > 366*24*time.Hour {
		return m, invalid("%s.countdown: %s is outside 0s..8784h", field, delay)
	}
	if receives != "" && t.GetArgs() != nil && t.GetArgs().GetStructValue() == nil {
		return m, invalid("%s.args: must be an object (or unset) to get the results passed in %q", field, receives)
	}
	t = proto.CloneOf(t)
	t.Countdown = nil
	if m.Spec, err = s.spec(t, now); err != nil {
		return m, invalid("%s: %s", field, status.Convert(err).Message())
	}
	m.Delay = delay
	return m, nil
}

// GetChain reads a chain with its steps.
func (s *Canvas) GetChain(ctx context.Context, r *jobsv1.GetChainRequest) (*jobsv1.Chain, error) {
	c, err := s.get(ctx, store.Chain, r.GetId())
	if err != nil {
		return nil, err
	}
	return chainProto(c), nil
}

// GetGroup reads a group with its members and callback.
func (s *Canvas) GetGroup(ctx context.Context, r *jobsv1.GetGroupRequest) (*jobsv1.Group, error) {
	c, err := s.get(ctx, store.Group, r.GetId())
	if err != nil {
		return nil, err
	}
	return groupProto(c), nil
}

func (s *Canvas) get(ctx context.Context, kind, id string) (*store.Canvas, error) {
	tenant, err := s.canvasTenant(ctx, kind, id)
	if err != nil {
		return nil, err
	}
	c, err := s.Store.GetCanvas(ctx, tenant, id, kind)
	return c, canvasErr(kind, err)
}

// CancelChain cancels a chain.
func (s *Canvas) CancelChain(ctx context.Context, r *jobsv1.CancelChainRequest) (*jobsv1.Chain, error) {
	c, err := s.cancel(ctx, store.Chain, r.GetId())
	if err != nil {
		return nil, err
	}
	return chainProto(c), nil
}

// CancelGroup cancels a group and its callback.
func (s *Canvas) CancelGroup(ctx context.Context, r *jobsv1.CancelGroupRequest) (*jobsv1.Group, error) {
	c, err := s.cancel(ctx, store.Group, r.GetId())
	if err != nil {
		return nil, err
	}
	return groupProto(c), nil
}

func (s *Canvas) cancel(ctx context.Context, kind, id string) (*store.Canvas, error) {
	tenant, err := s.canvasTenant(ctx, kind, id)
	if err != nil {
		return nil, err
	}
	c, err := s.Store.CancelCanvas(ctx, tenant, id, kind)
	if err != nil {
		return nil, canvasErr(kind, err)
	}
	if c.State == store.Succeeded || c.State == store.Failed {
		return nil, status.Errorf(codes.FailedPrecondition, "%s already %s", kind, c.State)
	}
	return c, nil
}

func (s *Canvas) canvasTenant(ctx context.Context, kind, id string) (string, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return "", err
	}
	if !canvasIDRe.MatchString(id) {
		return "", status.Errorf(codes.NotFound, "%s not found", kind)
	}
	return tenant, nil
}

func canvasErr(kind string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return status.Errorf(codes.NotFound, "%s not found", kind)
	}
	return grpcErr(err)
}

func memberProto(id string, t *store.Task) *jobsv1.Task {
	if t == nil {
		return &jobsv1.Task{Id: id} // expired
	}
	return taskProto(t)
}

func chainProto(c *store.Canvas) *jobsv1.Chain {
	out := &jobsv1.Chain{Id: c.ID, ResultArg: c.ResultArg, State: c.State, Error: c.Error,
		CreateTime: ts(c.Created), FinishTime: ts(c.Finished)}
	for i, t := range c.Members {
		out.Tasks = append(out.Tasks, memberProto(c.MemberIDs[i], t))
	}
	return out
}

func groupProto(c *store.Canvas) *jobsv1.Group {
	out := &jobsv1.Group{Id: c.ID, ResultArg: c.ResultArg, State: c.State, Error: c.Error,
		CreateTime: ts(c.Created), FinishTime: ts(c.Finished)}
	for i, t := range c.Members {
		out.Tasks = append(out.Tasks, memberProto(c.MemberIDs[i], t))
	}
	if c.CallbackID != "" {
		out.Callback = memberProto(c.CallbackID, c.Callback)
	}
	return out
}

// ListChains lists the tenant's chains, newest first.
func (s *Canvas) ListChains(ctx context.Context, r *jobsv1.ListChainsRequest) (*jobsv1.ListChainsResponse, error) {
	cs, next, err := s.list(ctx, store.Chain, r.GetPageSize(), r.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &jobsv1.ListChainsResponse{NextPageToken: next}
	for _, c := range cs {
		out.Chains = append(out.Chains, chainProto(c))
	}
	return out, nil
}

// ListGroups lists the tenant's groups and chords, newest first.
func (s *Canvas) ListGroups(ctx context.Context, r *jobsv1.ListGroupsRequest) (*jobsv1.ListGroupsResponse, error) {
	cs, next, err := s.list(ctx, store.Group, r.GetPageSize(), r.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &jobsv1.ListGroupsResponse{NextPageToken: next}
	for _, c := range cs {
		out.Groups = append(out.Groups, groupProto(c))
	}
	return out, nil
}

// A canvas is read with all its tasks, so pages are smaller than tasks'.
const (
	defaultCanvasPage = 20
	maxCanvasPage     = 100
)

func (s *Canvas) list(ctx context.Context, kind string, size int32, token string) ([]*store.Canvas, string, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, "", err
	}
	switch {
	case size < 0 || size > maxCanvasPage:
		return nil, "", invalid("pageSize: %d, at most %d", size, maxCanvasPage)
	case size == 0:
		size = defaultCanvasPage
	}
	cs, next, err := s.Store.ListCanvases(ctx, tenant, kind, int(size), token)
	if errors.Is(err, store.ErrBadCursor) {
		return nil, "", invalid("pageToken: not a token from this API")
	}
	if err != nil {
		return nil, "", grpcErr(err)
	}
	return cs, next, nil
}
