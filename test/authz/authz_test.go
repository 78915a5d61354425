// Package authz calls every RPC of the four services, found in the
// generated file descriptors, with no key, a wrong key and another
// tenant's key, so that an RPC added later is covered without anyone
// remembering to add it here.
package authz

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/test/internal/suite"

	// The services' descriptors register themselves on import.
	_ "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	_ "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	_ "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
)

// binaryOf says which binary serves the services of a proto package.
var binaryOf = map[protoreflect.FullName]string{
	"hookyard.ingress.v1":    "ingress",
	"hookyard.dispatcher.v1": "dispatcher",
	"hookyard.cache.v1":      "cache",
	"hookyard.jobs.v1":       "jobs",
}

// Every RPC of every Hookyard service.
func rpcs(t *testing.T) []protoreflect.MethodDescriptor {
	var out []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(f.Package()), "hookyard.") {
			return true
		}
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			if _, ok := binaryOf[f.Package()]; !ok {
				t.Errorf("service %s: no binary known for package %s; add it to binaryOf", svc.FullName(), f.Package())
				continue
			}
			for j := range svc.Methods().Len() {
				out = append(out, svc.Methods().Get(j))
			}
		}
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].FullName() < out[j].FullName() })
	return out
}

func TestEveryRPCRefusesStrangersAndOtherTenants(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	methods := rpcs(t)
	if len(methods) < 40 {
		t.Fatalf("found %d RPCs in the descriptors; the generated packages are not all linked", len(methods))
	}

	id := suite.NewID()
	tenantA, keyA := "ta"+id, "key-a-"+suite.RandHex(16)
	tenantB, keyB := "tb"+id, "key-b-"+suite.RandHex(16)
	st, err := suite.Start(ctx, t.TempDir(), suite.Options{ID: id, Keys: map[string]string{tenantA: keyA, tenantB: keyB}, Logf: t.Logf,
		// A's worker holds a lease through the whole matrix without
		// heartbeating.
		ServiceEnv: map[string]map[string]string{"jobs": {"HOOKYARD_JOBS_HEARTBEAT": "10m"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	defer func() {
		if t.Failed() {
			t.Log(st.Logs())
		}
	}()

	conns := map[string]*grpc.ClientConn{}
	for name, svc := range st.Services {
		c, err := grpc.NewClient(svc.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[name] = c
	}

	a := createTenantA(ctx, t, st, conns["jobs"], id, keyA)

	for _, m := range methods {
		conn := conns[binaryOf[m.Parent().ParentFile().Package()]]
		t.Run(string(m.FullName()), func(t *testing.T) {
			for _, who := range []struct {
				name string
				key  string
			}{{"no key", ""}, {"bad key", "wrong-" + suite.RandHex(8)}} {
				code, _ := call(ctx, conn, m, who.key, nil)
				if code != codes.Unauthenticated {
					t.Errorf("%s: %v, want Unauthenticated", who.name, code)
				}
			}
			code, out := call(ctx, conn, m, keyB, a.values(m))
			t.Logf("another tenant's key: %v", code)
			switch code {
			case codes.NotFound, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists:
			case codes.OK, codes.DeadlineExceeded:
				// Allowed only when it acted on the caller's own data,
				// which the markers below tell apart.
			default:
				t.Errorf("another tenant's key: %v; want NotFound, PermissionDenied or a refusal of the request", code)
			}
			for _, mark := range a.markers {
				if strings.Contains(out, mark) {
					t.Errorf("another tenant's key (%v) got tenant A's data %q: %s", code, mark, out)
				}
			}
		})
	}

	// Nothing tenant B did reached tenant A's resources.
	a.checkIntact(ctx, t, st, keyA)
}

// tenantA holds one resource of every kind, owned by tenant A, and the
// strings that only A's data contains.
type tenantA struct {
	byService map[protoreflect.FullName]map[string]any
	markers   []string
	id        string

	source, endpoint, message, task, leased, schedule, trigger, queue, ns, key string
}

func (a *tenantA) values(m protoreflect.MethodDescriptor) map[string]any {
	return a.byService[m.Parent().FullName()]
}

func createTenantA(ctx context.Context, t *testing.T, st *suite.Stack, jobsConn *grpc.ClientConn, id, key string) *tenantA {
	t.Helper()
	mark := "leak" + id
	a := &tenantA{id: id, source: "src-" + id, message: "msg-" + id, task: "task-" + id, queue: "q" + id, ns: "ns-" + id, key: "k-" + id}
	a.markers = []string{mark, base64.StdEncoding.EncodeToString([]byte(mark)), "ta" + id}
	in, disp, cache, jobs := st.Ingress(), st.Dispatcher(), st.Cache(), st.Jobs()
	must(t, in.JSON(ctx, "POST", "/v1/sources", key, map[string]any{"name": a.source, "provider": "stripe", "secrets": []string{"whsec_" + mark}}, 200, nil))
	var ep struct {
		ID string `json:"id"`
	}
	must(t, disp.JSON(ctx, "POST", "/v1/endpoints", key, map[string]any{"url": "http://127.0.0.1:9/" + mark, "description": mark, "eventTypes": []string{"app.never"}}, 200, &ep))
	a.endpoint = ep.ID
	must(t, disp.JSON(ctx, "POST", "/v1/messages", key, map[string]any{"id": a.message, "type": "e2e.secret", "data": map[string]string{"m": mark}}, 200, nil))
	// A task nobody works on stays pending.
	must(t, jobs.JSON(ctx, "POST", "/v1/tasks", key, map[string]any{"id": a.task, "name": "e2e.idle", "queue": a.queue, "args": map[string]string{"m": mark}}, 200, nil))
	var sch, trig struct {
		ID string `json:"id"`
	}
	must(t, jobs.JSON(ctx, "POST", "/v1/schedules", key, map[string]any{"cron": "0 0 1 1 *", "task": map[string]any{"name": "e2e.idle", "queue": a.queue, "args": map[string]string{"m": mark}}}, 200, &sch))
	a.schedule = sch.ID
	must(t, jobs.JSON(ctx, "POST", "/v1/triggers", key, map[string]any{"eventType": "app.never." + id, "task": map[string]any{"name": "e2e.idle", "queue": a.queue, "args": map[string]string{"m": mark}}}, 200, &trig))
	a.trigger = trig.ID
	must(t, cache.JSON(ctx, "POST", "/v1/namespaces", key, map[string]any{"name": a.ns, "strategy": "cache_aside"}, 200, nil))
	must(t, cache.JSON(ctx, "PUT", "/v1/namespaces/"+a.ns+"/keys/"+a.key, key, map[string]any{"value": base64.StdEncoding.EncodeToString([]byte(mark)), "ttl": "3600s"}, 200, nil))

	// A task A's worker holds, with its lease token: B must not be able
	// to heartbeat, complete or fail it even with the token.
	a.leased = "leased-" + id
	must(t, jobs.JSON(ctx, "POST", "/v1/tasks", key, map[string]any{"id": a.leased, "name": "e2e.held", "queue": "w" + a.queue, "args": map[string]string{"m": mark}, "softTimeLimit": "600s"}, 200, nil))
	lctx, lcancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key), 60*time.Second)
	defer lcancel()
	stream, err := jobsv1.NewWorkerServiceClient(jobsConn).Lease(lctx, &jobsv1.LeaseRequest{Queues: []string{"w" + a.queue}, Slots: 1, WorkerId: "a-" + id})
	must(t, err)
	lease, err := stream.Recv()
	must(t, err)
	if lease.GetTask().GetId() != a.leased {
		t.Fatalf("leased %q, want %q", lease.GetTask().GetId(), a.leased)
	}
	token := lease.GetLeaseToken()

	a.byService = map[protoreflect.FullName]map[string]any{
		"hookyard.ingress.v1.SourceService":      {"name": a.source},
		"hookyard.ingress.v1.EventService":       {"source": a.source, "type": "invoice.paid", "id": "ev-" + id},
		"hookyard.dispatcher.v1.EndpointService": {"id": a.endpoint, "url": "http://127.0.0.1:9/b"},
		"hookyard.dispatcher.v1.MessageService":  {"id": a.message, "type": "e2e.b"},
		"hookyard.jobs.v1.TaskService":           {"id": a.task, "name": "e2e.b"},
		"hookyard.jobs.v1.WorkerService":         {"task_id": a.leased, "lease_token": token, "queues": a.queue},
		"hookyard.jobs.v1.ScheduleService":       {"id": a.schedule},
		"hookyard.jobs.v1.TriggerService":        {"id": a.trigger},
		"hookyard.jobs.v1.QueueService":          {"name": a.queue},
		"hookyard.cache.v1.CacheService":         {"ns": a.ns, "name": a.ns, "key": a.key, "keys": a.key},
	}
	return a
}

// checkIntact reads every resource of A back as A.
func (a *tenantA) checkIntact(ctx context.Context, t *testing.T, st *suite.Stack, key string) {
	t.Helper()
	var got map[string]any
	get := func(svc *suite.Service, path string) map[string]any {
		t.Helper()
		got = nil
		if err := svc.JSON(ctx, "GET", path, key, nil, 200, &got); err != nil {
			t.Errorf("tenant A's resource after the matrix: %v", err)
		}
		return got
	}
	get(st.Ingress(), "/v1/sources/"+a.source)
	if ep := get(st.Dispatcher(), "/v1/endpoints/"+a.endpoint); ep["disabled"] == true || !strings.Contains(fmt.Sprint(ep["url"]), "leak") {
		t.Errorf("tenant A's endpoint changed: %v", ep)
	}
	get(st.Dispatcher(), "/v1/messages/"+a.message)
	if task := get(st.Jobs(), "/v1/tasks/"+a.task); task["state"] != "pending" || task["cancelRequested"] == true {
		t.Errorf("tenant A's task changed: %v", task)
	}
	if task := get(st.Jobs(), "/v1/tasks/"+a.leased); task["state"] != "running" {
		t.Errorf("tenant A's leased task changed: %v", task)
	}
	if s := get(st.Jobs(), "/v1/schedules/"+a.schedule); s["paused"] == true {
		t.Errorf("tenant A's schedule changed: %v", s)
	}
	get(st.Jobs(), "/v1/triggers/"+a.trigger)
	var queues struct {
		Queues []map[string]any `json:"queues"`
	}
	must(t, st.Jobs().JSON(ctx, "GET", "/v1/queues", key, nil, 200, &queues))
	for _, q := range queues.Queues {
		if q["name"] == a.queue && q["paused"] == true {
			t.Errorf("tenant A's queue was paused: %v", q)
		}
	}
	get(st.Cache(), "/v1/namespaces/"+a.ns)
	if e := get(st.Cache(), "/v1/namespaces/"+a.ns+"/keys/"+url.PathEscape(a.key)); e["value"] != a.markers[1] {
		t.Errorf("tenant A's cached value changed: %v", e)
	}
}

// call invokes m with the key (none when empty) and a request filled from
// values, and returns the status code and the answer as JSON.
func call(ctx context.Context, conn *grpc.ClientConn, m protoreflect.MethodDescriptor, key string, values map[string]any) (codes.Code, string) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	req := dynamicpb.NewMessage(m.Input())
	fill(req, values, 2)
	name := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
	if !m.IsStreamingServer() && !m.IsStreamingClient() {
		resp := dynamicpb.NewMessage(m.Output())
		err := conn.Invoke(ctx, name, req, resp)
		return status.Code(err), marshal(resp)
	}
	// A stream that sends nothing to a stranger within a few seconds has
	// leaked nothing; one that would wait for work ends with the deadline.
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	stream, err := conn.NewStream(sctx, &grpc.StreamDesc{StreamName: string(m.Name()), ServerStreams: m.IsStreamingServer(), ClientStreams: m.IsStreamingClient()}, name)
	if err != nil {
		return status.Code(err), ""
	}
	if err := stream.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return status.Code(err), ""
	}
	_ = stream.CloseSend()
	var all strings.Builder
	for {
		resp := dynamicpb.NewMessage(m.Output())
		if err := stream.RecvMsg(resp); err != nil {
			if errors.Is(err, io.EOF) {
				return codes.OK, all.String()
			}
			return status.Code(err), all.String()
		}
		all.WriteString(marshal(resp))
	}
}

// fill sets the request's identifying fields, also of its messages
// (depth levels down), from values by field name.
func fill(m protoreflect.Message, values map[string]any, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		v, ok := values[string(f.Name())]
		switch {
		case f.IsMap():
		case f.IsList():
			if s, isStr := v.(string); ok && isStr && f.Kind() == protoreflect.StringKind {
				m.Mutable(f).List().Append(protoreflect.ValueOfString(s))
			}
		case f.Kind() == protoreflect.StringKind && ok:
			if s, isStr := v.(string); isStr {
				m.Set(f, protoreflect.ValueOfString(s))
			}
		case f.Kind() == protoreflect.Int64Kind && ok:
			if n, isInt := v.(int64); isInt {
				m.Set(f, protoreflect.ValueOfInt64(n))
			}
		case f.Kind() == protoreflect.MessageKind && depth > 0 && strings.HasPrefix(string(f.Message().FullName()), "hookyard."):
			fill(m.Mutable(f).Message(), values, depth-1)
		}
	}
}

func marshal(m proto.Message) string {
	b, _ := protojson.Marshal(m)
	return string(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
