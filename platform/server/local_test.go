package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// CancelTask sets a header and a trailer, then fails for task "gone"
// (and for "plain" without setting any).
func (tasks) CancelTask(ctx context.Context, r *jobsv1.CancelTaskRequest) (*jobsv1.Task, error) {
	if r.GetId() == "plain" {
		return nil, status.Error(codes.NotFound, "no such task")
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs("x-cost", "7")); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, metadata.Pairs("x-done", "yes")); err != nil {
		return nil, err
	}
	if r.GetId() == "gone" {
		return nil, status.Error(codes.FailedPrecondition, "task already finished")
	}
	return &jobsv1.Task{Id: r.GetId()}, nil
}

// waits receives what WaitTask saw: its deadline, then why it ended.
var waits = make(chan any, 2)

func (tasks) WaitTask(ctx context.Context, _ *jobsv1.WaitTaskRequest) (*jobsv1.Task, error) {
	d, _ := ctx.Deadline()
	waits <- d
	select {
	case <-ctx.Done():
		waits <- ctx.Err()
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		waits <- errors.New("the handler's context was not cancelled")
		return &jobsv1.Task{}, nil
	}
}

// rpcCounter counts the calls and connections a gRPC server's stats
// handler sees.
type rpcCounter struct{ rpcs, conns atomic.Int64 }

func (c *rpcCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *rpcCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.Begin); ok {
		c.rpcs.Add(1)
	}
}
func (c *rpcCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c *rpcCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnBegin); ok {
		c.conns.Add(1)
	}
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	req.Header.Set("Authorization", "Bearer acme-key-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// A unary REST call runs in process: the gRPC server sees neither a call
// nor a connection. (Over the loopback connection it saw both.)
func TestRESTCallsRunInProcess(t *testing.T) {
	var c rpcCounter
	s := startOpts(t, func(o *Options) { o.GRPCOptions = []grpc.ServerOption{grpc.StatsHandler(&c)} })
	for range 3 {
		if code, body := get(t, "http://"+s.HTTPAddr()+"/v1/tasks/t1", "acme-key-1"); code != http.StatusOK {
			t.Fatalf("got %d %s", code, body)
		}
	}
	if n, m := c.rpcs.Load(), c.conns.Load(); n != 0 || m != 0 {
		t.Errorf("the gRPC server saw %d calls on %d connections for 3 REST calls, want none", n, m)
	}
}

// The server's own interceptors run on an in-process call: without the
// key in the metadata auth refuses it, with it the handler sees the tenant.
func TestInProcessCallsAreAuthenticated(t *testing.T) {
	s := startOpts(t, nil)
	c := jobsv1.NewTaskServiceClient(newLocalConn(s.GRPC.services, s.unary, nil))
	if _, err := c.GetTask(context.Background(), &jobsv1.GetTaskRequest{Id: "t1"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a key: %v, want Unauthenticated", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer acme-key-1")
	if task, err := c.GetTask(ctx, &jobsv1.GetTaskRequest{Id: "t1"}); err != nil || task.GetName() != "email.send" {
		t.Errorf("with the key: %v %v", task, err)
	}
	// Over REST the refusal is 401 with the gateway's error body.
	code, body := get(t, "http://"+s.HTTPAddr()+"/v1/tasks/t1", "")
	var st struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusUnauthorized || err != nil || st.Code != int(codes.Unauthenticated) || st.Message == "" {
		t.Errorf("without a key: %d %s", code, body)
	}
}

// What a handler sets with grpc.SetHeader and SetTrailer reaches the REST
// response as the gateway forwards metadata, with the content type a gRPC
// server sends (in the headers, or in the trailers of an error answered
// with trailers only), as over the loopback connection.
func TestRESTForwardsHandlerMetadata(t *testing.T) {
	s := startOpts(t, nil)
	cancel := func(id string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.HTTPAddr()+"/v1/tasks/"+id+":cancel", strings.NewReader("{}"))
		req.Header.Set("TE", "trailers")
		resp, _ := do(t, req)
		return resp
	}
	cases := []struct {
		id               string
		code             int
		header, trailers map[string]string
	}{
		{"t1", 200,
			map[string]string{"Grpc-Metadata-X-Cost": "7", "Grpc-Metadata-Content-Type": "application/grpc"},
			map[string]string{"Grpc-Trailer-X-Done": "yes"}},
		{"gone", 400,
			map[string]string{"Grpc-Metadata-X-Cost": "7", "Grpc-Metadata-Content-Type": "application/grpc"},
			map[string]string{"Grpc-Trailer-X-Done": "yes"}},
		{"plain", 404,
			map[string]string{"Grpc-Metadata-Content-Type": ""},
			map[string]string{"Grpc-Trailer-Content-Type": "application/grpc"}},
	}
	for _, c := range cases {
		resp := cancel(c.id)
		if resp.StatusCode != c.code {
			t.Errorf("%s: status %d, want %d", c.id, resp.StatusCode, c.code)
		}
		for k, v := range c.header {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: header %s = %q, want %q (headers %v)", c.id, k, got, v, resp.Header)
			}
		}
		for k, v := range c.trailers {
			if got := resp.Trailer.Get(k); got != v {
				t.Errorf("%s: trailer %s = %q, want %q (trailers %v)", c.id, k, got, v, resp.Trailer)
			}
		}
	}
}

// The deadline a REST client asks for (Grpc-Timeout) and the end of its
// request reach the handler's context.
func TestRESTDeadlineAndCancelReachHandler(t *testing.T) {
	s := startOpts(t, nil)
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.HTTPAddr()+"/v1/tasks/t1:wait", nil)
	req.Header.Set("Authorization", "Bearer acme-key-1")
	req.Header.Set("Grpc-Timeout", "5S")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req.WithContext(ctx)); err == nil {
			resp.Body.Close()
		}
	}()
	start := time.Now()
	select {
	case d := <-waits:
		if dl := d.(time.Time); dl.Before(start.Add(4*time.Second)) || dl.After(time.Now().Add(5*time.Second)) {
			t.Errorf("handler's deadline %v, want about 5s after %v", dl, start)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler was not called")
	}
	cancel() // the client hangs up
	if err := <-waits; !errors.Is(err.(error), context.Canceled) {
		t.Errorf("handler ended with %v, want context.Canceled", err)
	}
	<-done
}

// A panicking handler costs its request a 500 (the recovery interceptor),
// not the process.
func TestRESTPanicIs500(t *testing.T) {
	s := startOpts(t, nil)
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.HTTPAddr()+"/v1/tasks", strings.NewReader(`{"name":"x"}`))
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, `"code":13`) {
		t.Errorf("panicking handler: %d %s", resp.StatusCode, body)
	}
	if code, body := get(t, "http://"+s.HTTPAddr()+"/v1/tasks/t1", "acme-key-1"); code != http.StatusOK {
		t.Errorf("after the panic: %d %s", code, body)
	}
}

// A REST call is counted once in the gRPC server metrics.
func TestRESTCallCountedOnce(t *testing.T) {
	s := startOpts(t, nil)
	get(t, "http://"+s.HTTPAddr()+"/v1/tasks/t1", "acme-key-1")
	_, metrics := get(t, "http://"+s.HTTPAddr()+"/metrics", "")
	for _, want := range []string{
		`grpc_server_started_total{grpc_method="GetTask",grpc_service="hookyard.jobs.v1.TaskService",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="GetTask",grpc_service="hookyard.jobs.v1.TaskService",grpc_type="unary"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// shared answers every GetTask with the same message and keeps the
// requests it was given.
type shared struct {
	jobsv1.UnimplementedTaskServiceServer
	task *jobsv1.Task
	got  *jobsv1.GetTaskRequest
}

func (s *shared) GetTask(_ context.Context, r *jobsv1.GetTaskRequest) (*jobsv1.Task, error) {
	s.got = r
	return s.task, nil
}

// The handler gets a copy of the request and the caller a copy of the
// reply, as if both had been encoded: neither side can change the other's.
func TestInProcessCallsCopyMessages(t *testing.T) {
	impl := &shared{task: &jobsv1.Task{Id: "t1", Name: "email.send"}}
	pass := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(ctx, req)
	}
	conn := newLocalConn([]service{{&jobsv1.TaskService_ServiceDesc, impl}}, chainUnary([]grpc.UnaryServerInterceptor{pass}), nil)
	req := &jobsv1.GetTaskRequest{Id: "t1"}
	got, err := jobsv1.NewTaskServiceClient(conn).GetTask(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if impl.got == req || !proto.Equal(impl.got, req) {
		t.Errorf("handler got %p %v for request %p %v, want an equal copy", impl.got, impl.got, req, req)
	}
	if got == impl.task || !proto.Equal(got, impl.task) {
		t.Errorf("caller got %p %v for reply %p %v, want an equal copy", got, got, impl.task, impl.task)
	}
	// An unknown method is Unimplemented, as the gRPC server answers it.
	err = conn.Invoke(context.Background(), "/hookyard.jobs.v1.TaskService/Nope", req, &jobsv1.Task{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("unknown method: %v", err)
	}
}
