package worker_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
	"github.com/hookyard/hookyard/services/jobs/worker"
)

// exampleEnv is a jobs service for the examples, which get no *testing.T.
var exampleEnv struct {
	conn   *grpc.ClientConn
	apiKey string
}

func TestMain(m *testing.M) {
	tb := &mainTB{}
	e := jobstest.Start(tb, jobstest.Options{})
	exampleEnv.conn, exampleEnv.apiKey = e.Replicas[0].Conn, e.Acme.Key
	code := m.Run()
	tb.cleanup()
	os.Exit(code)
}

// mainTB is enough of testing.TB for jobstest.Start outside a test.
type mainTB struct {
	testing.TB
	cleanups []func()
}

func (*mainTB) Helper()                           {}
func (*mainTB) Name() string                      { return "example" }
func (*mainTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (*mainTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (t *mainTB) Cleanup(f func())                { t.cleanups = append(t.cleanups, f) }
func (t *mainTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

func Example() {
	// conn is a gRPC connection to the jobs service (port 9093), apiKey a
	// tenant's key from HOOKYARD_API_KEYS.
	conn, apiKey := exampleEnv.conn, exampleEnv.apiKey

	w := worker.New(conn, worker.Config{APIKey: apiKey, Queues: []string{"emails"}, Slots: 8})
	w.Handle("email.send", func(ctx context.Context, t *worker.Task) (any, error) {
		var args struct{ To string }
		if err := t.Bind(&args); err != nil {
			return nil, err
		}
		return map[string]any{"sent": args.To}, nil
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	// Enqueue a task and wait for its result.
	tasks := jobsv1.NewTaskServiceClient(conn)
	auth := worker.WithAPIKey(context.Background(), apiKey)
	args, _ := structpb.NewValue(map[string]any{"To": "ada@example.com"})
	task, err := tasks.CreateTask(auth, &jobsv1.CreateTaskRequest{Task: &jobsv1.Task{Name: "email.send", Queue: "emails", Args: args}})
	if err != nil {
		panic(err)
	}
	task, err = tasks.WaitTask(auth, &jobsv1.WaitTaskRequest{Id: task.Id, Timeout: durationpb.New(time.Minute)})
	if err != nil {
		panic(err)
	}
	fmt.Println(task.State, task.Result.GetStructValue().Fields["sent"].GetStringValue())

	stop() // drain: running handlers finish and report
	<-done
	// Output: succeeded ada@example.com
}
