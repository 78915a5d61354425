package jobs_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// Two replicas race for every tick of one schedule: each tick runs exactly
// once and none is skipped.
func TestScheduleFiresEachTickOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	calls := map[string]int{} // tick task id → calls
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls[r.Header.Get("X-Task")]++
		mu.Unlock()
	}))
	defer srv.Close()
	e := jobstest.Start(t, jobstest.Options{Replicas: 2})
	ctx := e.Acme.Ctx(context.Background())
	args, _ := structpb.NewValue(map[string]any{"url": srv.URL})
	s, err := e.Replicas[0].Sched.CreateSchedule(ctx, &jobsv1.CreateScheduleRequest{Schedule: &jobsv1.Schedule{
		Interval: durationpb.New(100 * time.Millisecond), Task: &jobsv1.Task{Name: "http", Args: args}}})
	if err != nil {
		t.Fatal(err)
	}
	const ticks = 100
	var tasks []*jobsv1.Task
	jobstest.WaitFor(t, 60*time.Second, "100 ticks", func() bool {
		l, err := e.Replicas[1].Tasks.ListTasks(ctx, &jobsv1.ListTasksRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		tasks = l.Tasks
		return len(tasks) >= ticks
	})
	if _, err := e.Replicas[0].Sched.UpdateSchedule(ctx, &jobsv1.UpdateScheduleRequest{
		Schedule: &jobsv1.Schedule{Id: s.Id, Paused: true}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"paused"}}}); err != nil {
		t.Fatal(err)
	}
	// Every tick's task id names its tick; consecutive ticks are one
	// interval apart, so a skipped tick shows as a gap.
	var at []int64
	for _, task := range tasks {
		ms, err := strconv.ParseInt(strings.TrimPrefix(task.Id, s.Id+"-"), 10, 64)
		if err != nil {
			t.Fatalf("task id %q", task.Id)
		}
		at = append(at, ms)
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	for i := 1; i < len(at); i++ {
		if d := at[i] - at[i-1]; d != 100 {
			t.Fatalf("ticks %d and %d are %dms apart", at[i-1], at[i], d)
		}
	}
	// Each tick's http task ran once: wait for them all, then count calls
	// per attempt (a second run of a task would succeed a second time).
	for _, task := range tasks[:ticks] {
		got := e.WaitState(t, e.Acme, task.Id, "succeeded", 30*time.Second)
		if got.Attempts != 1 {
			t.Errorf("tick task %s ran %d times", task.Id, got.Attempts)
		}
	}
	got, err := e.Replicas[1].Sched.GetSchedule(ctx, &jobsv1.GetScheduleRequest{Id: s.Id})
	if err != nil || !got.Paused || got.NextRunTime != nil || got.LastTaskId == "" {
		t.Fatalf("paused schedule: %v %v", got, err)
	}
}

func TestScheduleCRUDAndValidation(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	for _, body := range []string{
		`{"task":{"name":"x"}}`,
		`{"cron":"* * *","task":{"name":"x"}}`,
		// 30 February never comes: its zero next tick was due forever.
		`{"cron":"0 0 30 2 *","task":{"name":"x"}}`,
		`{"cron":"0 9 * * *","timeZone":"Mars/Olympus","task":{"name":"x"}}`,
		`{"cron":"0 9 * * *","interval":"1s","task":{"name":"x"}}`,
		`{"interval":"1ms","task":{"name":"x"}}`,
		`{"cron":"0 9 * * *"}`,
		`{"cron":"0 9 * * *","task":{"name":"http","args":{"url":"http://169.254.169.254/"}}}`,
	} {
		if code, out := e.REST(t, e.Acme, "POST", "/v1/schedules", body); code != 400 {
			t.Errorf("%s: %d %v, want 400", body, code, out)
		}
	}
	code, s := e.REST(t, e.Acme, "POST", "/v1/schedules", `{"cron":"30 9 * * 1-5","timeZone":"Europe/Berlin","task":{"name":"report.daily"}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, s)
	}
	next, err := time.Parse(time.RFC3339, s["nextRunTime"].(string))
	if err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if n := next.In(berlin); n.Hour() != 9 || n.Minute() != 30 || n.Weekday() == time.Saturday || n.Weekday() == time.Sunday {
		t.Errorf("next run %v", n)
	}
	id := s["id"].(string)
	if code, _ := e.REST(t, e.Other, "GET", "/v1/schedules/"+id, ""); code != 404 {
		t.Errorf("other tenant: %d", code)
	}
	if code, l := e.REST(t, e.Acme, "GET", "/v1/schedules", ""); code != 200 || len(l["schedules"].([]any)) != 1 {
		t.Errorf("list: %d %v", code, l)
	}
	if code, u := e.REST(t, e.Acme, "PATCH", "/v1/schedules/"+id, `{"paused":true}`); code != 200 || u["paused"] != true {
		t.Errorf("pause: %d %v", code, u)
	}
	if code, _ := e.REST(t, e.Acme, "DELETE", "/v1/schedules/"+id, ""); code != 200 {
		t.Errorf("delete: %d", code)
	}
	_, err = e.Replicas[0].Sched.GetSchedule(e.Acme.Ctx(context.Background()), &jobsv1.GetScheduleRequest{Id: id})
	wantCode(t, "get deleted", err, codes.NotFound)
}
