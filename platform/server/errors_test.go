package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// failing answers every call with a backing-store failure.
type failing struct {
	jobsv1.UnimplementedTaskServiceServer
}

func (failing) GetTask(context.Context, *jobsv1.GetTaskRequest) (*jobsv1.Task, error) {
	return nil, Unavailable("hookyard.jobs.v1", "task store", errors.New("dial tcp 10.1.2.3:6379: connect: connection refused"))
}

func (failing) CreateTask(context.Context, *jobsv1.CreateTaskRequest) (*jobsv1.Task, error) {
	return nil, InvalidArgument("hookyard.jobs.v1", "task.name", "must not be empty")
}

// A backing service's error text (hosts, ports, keys) never reaches the
// client, which gets a retry hint and a machine-readable reason instead;
// the cause is logged.
func TestUnavailableHidesTheCause(t *testing.T) {
	var logs bytes.Buffer
	keys := startOpts(t, nil).opts.Keys
	s := New(Options{Name: "t", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Keys: keys,
		Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	jobsv1.RegisterTaskServiceServer(s.GRPC, failing{})
	s.RegisterGateway(GatewayHandler(jobsv1.RegisterTaskServiceHandlerClient, jobsv1.NewTaskServiceClient))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := jobsv1.NewTaskServiceClient(conn)
	own := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer acme-key-1")

	_, err = c.GetTask(own, &jobsv1.GetTaskRequest{Id: "t1"})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
	if strings.Contains(st.Message(), "6379") || strings.Contains(st.Message(), "10.1.2.3") {
		t.Errorf("the cause reached the client: %q", st.Message())
	}
	var retry, info bool
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			retry = d.GetRetryDelay().AsDuration() > 0
		case *errdetails.ErrorInfo:
			info = d.GetReason() == "UNAVAILABLE" && d.GetDomain() == "hookyard.jobs.v1"
		}
	}
	if !retry || !info {
		t.Errorf("details %v: want RetryInfo and ErrorInfo", st.Details())
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("the cause was not logged: %s", logs.String())
	}

	// Over REST: 503, the retry hint as Retry-After, no cause.
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.HTTPAddr()+"/v1/tasks/t1", nil)
	req.Header.Set("Authorization", "Bearer acme-key-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" || strings.Contains(string(body), "6379") {
		t.Errorf("REST: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}

	// The standard gRPC server metrics count the call.
	mresp, err := http.Get("http://" + s.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metrics), `grpc_server_handled_total{grpc_code="Unavailable",grpc_method="GetTask"`) {
		t.Errorf("grpc_server_handled_total does not count the call")
	}

	_, err = c.CreateTask(own, &jobsv1.CreateTaskRequest{})
	st = status.Convert(err)
	var field string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
			field = br.GetFieldViolations()[0].GetField()
		}
	}
	if st.Code() != codes.InvalidArgument || field != "task.name" || !strings.Contains(st.Message(), "task.name") {
		t.Errorf("invalid argument: %v %v", st.Code(), st.Details())
	}
}

func TestBadRequestFields(t *testing.T) {
	err := BadRequest("d", errors.Join(
		errors.New(`name "Bad.Name": use lowercase`),
		errors.New("retry_schedule[2]: too long"),
		errors.New("endpoint is required"),
	))
	st := status.Convert(err)
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if st.Code() != codes.InvalidArgument || strings.Join(fields, ",") != "name,retry_schedule[2]," {
		t.Fatalf("got %v %q", st.Code(), fields)
	}
}
