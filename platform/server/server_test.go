package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// tasks is a tenant-scoped fake resource store: task "t1" belongs to acme.
type tasks struct {
	jobsv1.UnimplementedTaskServiceServer
}

func (tasks) GetTask(ctx context.Context, r *jobsv1.GetTaskRequest) (*jobsv1.Task, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if tenant != "acme" || r.GetId() != "t1" {
		return nil, status.Errorf(codes.NotFound, "task %q not found", r.GetId())
	}
	return &jobsv1.Task{Id: "t1", Name: "email.send"}, nil
}

func (tasks) CreateTask(context.Context, *jobsv1.CreateTaskRequest) (*jobsv1.Task, error) {
	panic("boom")
}

func start(t *testing.T, check func(context.Context) error) (*Server, func()) {
	t.Helper()
	keys, err := auth.ParseKeys("acme:acme-key-1,globex:globex-key-1")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{
		Name: "test", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Log:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		Keys:          keys,
		Checks:        []Check{{Name: "dep", Fn: check}},
		ReadyInterval: 50 * time.Millisecond,
	})
	jobsv1.RegisterTaskServiceServer(s.GRPC, tasks{})
	s.RegisterGateway(GatewayHandler(jobsv1.RegisterTaskServiceHandlerClient, jobsv1.NewTaskServiceClient))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after shutdown", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
}

func get(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRESTAuthAndTenancy(t *testing.T) {
	s, stop := start(t, func(context.Context) error { return nil })
	defer stop()
	base := "http://" + s.HTTPAddr()
	cases := []struct {
		key  string
		want int
	}{
		{"", 401},
		{"not-a-key-1", 401},
		{"globex-key-1", 404}, // another tenant's resource
		{"acme-key-1", 200},
	}
	for _, c := range cases {
		code, body := get(t, base+"/v1/tasks/t1", c.key)
		if code != c.want {
			t.Errorf("key %q: got %d (%s), want %d", c.key, code, body, c.want)
		}
	}
	if code, _ := get(t, base+"/v1/tasks", "acme-key-1"); code != http.StatusNotImplemented {
		t.Errorf("unimplemented method: got %d, want 501", code)
	}
}

func TestGRPCAuthPanicAndHealth(t *testing.T) {
	s, stop := start(t, func(context.Context) error { return nil })
	defer stop()
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := jobsv1.NewTaskServiceClient(conn)
	ctx := context.Background()
	if _, err := c.GetTask(ctx, &jobsv1.GetTaskRequest{Id: "t1"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no key: %v", err)
	}
	other := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer globex-key-1")
	if _, err := c.GetTask(other, &jobsv1.GetTaskRequest{Id: "t1"}); status.Code(err) != codes.NotFound {
		t.Errorf("other tenant: %v", err)
	}
	own := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer acme-key-1")
	if task, err := c.GetTask(own, &jobsv1.GetTaskRequest{Id: "t1"}); err != nil || task.GetName() != "email.send" {
		t.Errorf("own tenant: %v %v", task, err)
	}
	if _, err := c.CreateTask(own, &jobsv1.CreateTaskRequest{}); status.Code(err) != codes.Internal {
		t.Errorf("panicking handler: %v", err)
	}
	// The server survived the panic.
	if _, err := c.GetTask(own, &jobsv1.GetTaskRequest{Id: "t1"}); err != nil {
		t.Errorf("after panic: %v", err)
	}
	waitHealth(t, conn, healthpb.HealthCheckResponse_SERVING)
}

func waitHealth(t *testing.T, conn *grpc.ClientConn, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	h := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(5 * time.Second)
	var last healthpb.HealthCheckResponse_ServingStatus
	for time.Now().Before(deadline) {
		resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil {
			last = resp.GetStatus()
			if last == want {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("health stayed %v, want %v", last, want)
}

func TestReadinessFollowsDependencies(t *testing.T) {
	var down atomic.Bool
	s, stop := start(t, func(context.Context) error {
		if down.Load() {
			return errors.New("broker unreachable")
		}
		return nil
	})
	defer stop()
	base := "http://" + s.HTTPAddr()
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	if code, _ := get(t, base+"/readyz", ""); code != 200 {
		t.Fatalf("readyz = %d while up", code)
	}
	waitHealth(t, conn, healthpb.HealthCheckResponse_SERVING)
	down.Store(true)
	code, body := get(t, base+"/readyz", "")
	if code != 503 || !strings.Contains(body, "broker unreachable") {
		t.Fatalf("readyz = %d %s while down", code, body)
	}
	waitHealth(t, conn, healthpb.HealthCheckResponse_NOT_SERVING)
	if code, _ := get(t, base+"/healthz", ""); code != 200 {
		t.Fatalf("healthz = %d: liveness must not follow dependencies", code)
	}
	down.Store(false)
	waitHealth(t, conn, healthpb.HealthCheckResponse_SERVING)

	code, body = get(t, base+"/metrics", "")
	if code != 200 || !strings.Contains(body, "hookyard_http_requests_total") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics = %d, missing expected series", code)
	}
}

// In-flight requests finish before Run returns.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	s, stop := start(t, func(context.Context) error { return nil })
	release := make(chan struct{})
	s.Handle("GET /slow", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		<-release
		_, _ = w.Write([]byte("done"))
	}))
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + s.HTTPAddr() + "/slow")
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- string(b)
	}()
	time.Sleep(100 * time.Millisecond)
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	time.Sleep(100 * time.Millisecond)
	close(release)
	if got := <-result; got != "done" {
		t.Fatalf("in-flight request got %q", got)
	}
	<-stopped
}
