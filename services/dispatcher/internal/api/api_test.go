package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/config"
	"github.com/hookyard/hookyard/platform/dedupe"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/services/dispatcher/internal/dispatcher"
	"github.com/hookyard/hookyard/services/dispatcher/internal/endpoint"
	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
	"github.com/hookyard/hookyard/services/dispatcher/internal/task"
	"github.com/hookyard/hookyard/services/dispatcher/internal/testenv"
)

// allowed is the HOOKYARD_ALLOW_CIDRS of the test server.
const allowed = "10.1.0.0/16"

// env is one dispatcher's API served by the platform server (interceptors,
// gateway and all) on loopback ports, with two tenants.
type env struct {
	id           string // unique; also the event source of sent messages
	acme, globex tenant
	eps          dispatcherv1.EndpointServiceClient
	msgs         dispatcherv1.MessageServiceClient
	queues       dispatcherv1.QueueServiceClient
	names        task.Queues // the dispatcher's queue names
	base         string      // REST base URL
	store        *message.Store
	endpoints    *endpoint.Store
	sends        *dedupe.Store // the ids SendMessage remembers
	prefix       string        // Redis key prefix of the test
	rdb          redis.UniversalClient
}

type tenant struct{ name, key string }

func start(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	return startTB(t)
}

// startTB is start for a test or a benchmark (which may not run in
// parallel).
func startTB(t testing.TB) *env {
	t.Helper()
	id := testenv.ID()
	e := &env{id: id, acme: tenant{"acme-" + id, "acme-key-" + id}, globex: tenant{"globex-" + id, "globex-key-" + id}}

	var cfg dispatcher.Config
	l := config.NewLoader("dispatcher")
	cfg.Register(l)
	if err := l.Parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg.KeyPrefix, cfg.QueuePrefix, cfg.EventBindings = testenv.KeyPrefix(id), "hookyard.test.dispatcher."+id, id+".#"
	// Sources and published ids under the test's own prefix.
	cfg.SourcesKeyPrefix, cfg.EventIDsKeyPrefix = cfg.KeyPrefix, cfg.KeyPrefix+":ids"
	e.prefix = cfg.KeyPrefix
	e.names = cfg.Queues()
	rdb := testenv.Redis(t, cfg.KeyPrefix)
	d, err := dispatcher.New(cfg, dispatcher.Deps{Rabbit: testenv.Rabbit(t), Redis: rdb, AllowCIDRs: allowed})
	if err != nil {
		t.Fatal(err)
	}
	e.store = message.New(rdb, cfg.KeyPrefix, cfg.Retention)
	e.endpoints = endpoint.New(rdb, cfg.KeyPrefix)
	e.sends = dedupe.New(rdb, cfg.EventIDsKeyPrefix)
	e.rdb = rdb

	keys, err := auth.ParseKeys(e.acme.name + ":" + e.acme.key + "," + e.globex.name + ":" + e.globex.key)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{
		Name: "dispatcher", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Log: slog.New(slog.DiscardHandler), Keys: keys, ShutdownTimeout: 5 * time.Second,
	})
	d.Register(srv)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
		d.Publisher.Close()
	})
	e.eps = dispatcherv1.NewEndpointServiceClient(conn)
	e.msgs = dispatcherv1.NewMessageServiceClient(conn)
	e.queues = dispatcherv1.NewQueueServiceClient(conn)
	e.base = "http://" + srv.HTTPAddr()
	return e
}

// as authenticates gRPC calls with key ("" sends none).
func as(key string) context.Context {
	ctx := context.Background()
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	return ctx
}

// rest calls the gateway and decodes the JSON answer.
func (e *env) rest(t *testing.T, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// restOK calls the gateway and fails the test unless it answers 200.
func (e *env) restOK(t *testing.T, method, path, key, body string) map[string]any {
	t.Helper()
	code, out := e.rest(t, method, path, key, body)
	if code != http.StatusOK {
		t.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
}

func (e *env) create(t *testing.T, key string, ep *dispatcherv1.Endpoint) *dispatcherv1.Endpoint {
	t.Helper()
	out, err := e.eps.CreateEndpoint(as(key), &dispatcherv1.CreateEndpointRequest{Endpoint: ep})
	if err != nil {
		t.Fatalf("create endpoint: %v", err)
	}
	return out
}

// record stores a message of tenant with one delivery and one attempt, as
// the fan-out and a delivery worker would have.
func (e *env) record(t *testing.T, tenant, id, ep string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.store.Record(ctx, tenant, &message.Message{ID: id, Source: e.id, Type: "order.created",
		RoutingKey: e.id + ".order.created", CreateTime: time.Now(), Body: []byte(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.InitDeliveries(ctx, tenant, id, []string{ep}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.AddAttempt(ctx, tenant, id, &dispatcherv1.Attempt{EndpointId: ep, Number: 1, StatusCode: 503}); err != nil {
		t.Fatal(err)
	}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// checkSecret fails unless s is whsec_ and the base64 of 24-64 bytes.
func checkSecret(t *testing.T, s string) {
	t.Helper()
	raw, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		t.Fatalf("secret %q does not start with whsec_", s)
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(key) < 24 || len(key) > 64 {
		t.Fatalf("secret %q: %d bytes, %v; want base64 of 24-64 bytes", s, len(key), err)
	}
}

func TestAPIKeyRequired(t *testing.T) {
	e := start(t)
	ep := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "https://example.com/hook"})
	for _, key := range []string{"", "not-a-known-key"} {
		ctx := as(key)
		_, err := e.eps.CreateEndpoint(ctx, &dispatcherv1.CreateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Url: "https://example.com/hook"}})
		wantCode(t, "create", err, codes.Unauthenticated)
		_, err = e.eps.GetEndpoint(ctx, &dispatcherv1.GetEndpointRequest{Id: ep.GetId()})
		wantCode(t, "get", err, codes.Unauthenticated)
		_, err = e.eps.ListEndpoints(ctx, &dispatcherv1.ListEndpointsRequest{})
		wantCode(t, "list", err, codes.Unauthenticated)
		_, err = e.eps.RotateEndpointSecret(ctx, &dispatcherv1.RotateEndpointSecretRequest{Id: ep.GetId()})
		wantCode(t, "rotate", err, codes.Unauthenticated)
		_, err = e.msgs.SendMessage(ctx, &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Type: "a.b"}})
		wantCode(t, "send", err, codes.Unauthenticated)
		_, err = e.msgs.ListDeadLetters(ctx, &dispatcherv1.ListDeadLettersRequest{})
		wantCode(t, "dead letters", err, codes.Unauthenticated)

		for _, r := range []struct{ method, path, body string }{
			{"GET", "/v1/endpoints", ""},
			{"POST", "/v1/endpoints", `{"url":"https://example.com/hook"}`},
			{"GET", "/v1/endpoints/" + ep.GetId(), ""},
			{"DELETE", "/v1/endpoints/" + ep.GetId(), ""},
			{"POST", "/v1/messages", `{"type":"a.b"}`},
			{"GET", "/v1/messages/m1", ""},
		} {
			if code, body := e.rest(t, r.method, r.path, key, r.body); code != http.StatusUnauthorized {
				t.Errorf("%s %s with key %q: %d %v, want 401", r.method, r.path, key, code, body)
			}
		}
	}
	// Nothing was changed by the refused calls.
	if _, err := e.eps.GetEndpoint(as(e.acme.key), &dispatcherv1.GetEndpointRequest{Id: ep.GetId()}); err != nil {
		t.Fatal(err)
	}
}

func TestSecretShownOnlyOnCreateAndRotate(t *testing.T) {
	e := start(t)
	ctx := as(e.acme.key)
	ep := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "https://example.com/hook", EventTypes: []string{"stripe.*"}})
	checkSecret(t, ep.GetSecret())
	got, err := e.eps.GetEndpoint(ctx, &dispatcherv1.GetEndpointRequest{Id: ep.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetSecret() != "" || got.GetUrl() != ep.GetUrl() || got.GetId() != ep.GetId() {
		t.Fatalf("get: %v", got)
	}
	rot, err := e.eps.RotateEndpointSecret(ctx, &dispatcherv1.RotateEndpointSecretRequest{Id: ep.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	checkSecret(t, rot.GetSecret())
	if rot.GetSecret() == ep.GetSecret() {
		t.Fatal("rotate returned the old secret")
	}
	if until := time.Until(rot.GetPreviousExpireTime().AsTime()); until < 23*time.Hour || until > 25*time.Hour {
		t.Errorf("old secret expires in %v, want the default overlap of 24h", until)
	}
	if _, err := e.eps.RotateEndpointSecret(ctx, &dispatcherv1.RotateEndpointSecretRequest{Id: ep.GetId(), Overlap: durationpb.New(-time.Second)}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "overlap") {
		t.Errorf("negative overlap: %v, want InvalidArgument naming overlap", err)
	}

	// The same over REST.
	created := e.restOK(t, "POST", "/v1/endpoints", e.acme.key, `{"url":"https://example.com/other","eventTypes":["github.#"]}`)
	checkSecret(t, created["secret"].(string))
	id := created["id"].(string)
	if s := e.restOK(t, "GET", "/v1/endpoints/"+id, e.acme.key, "")["secret"]; s != "" && s != nil {
		t.Errorf("REST get shows secret %v", s)
	}
	list := e.restOK(t, "GET", "/v1/endpoints", e.acme.key, "")["endpoints"].([]any)
	if len(list) != 2 {
		t.Fatalf("list: %d endpoints, want 2", len(list))
	}
	for _, item := range list {
		if s := item.(map[string]any)["secret"]; s != "" && s != nil {
			t.Errorf("REST list shows secret %v", s)
		}
	}
	rotated := e.restOK(t, "POST", "/v1/endpoints/"+id+":rotateSecret", e.acme.key, `{}`)
	checkSecret(t, rotated["secret"].(string))
	if rotated["secret"] == created["secret"] {
		t.Error("REST rotate returned the old secret")
	}
	resp, err := e.eps.ListEndpoints(ctx, &dispatcherv1.ListEndpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range resp.GetEndpoints() {
		if ep.GetSecret() != "" {
			t.Errorf("gRPC list shows the secret of %s", ep.GetId())
		}
	}
}

func TestOtherTenantsResourcesAreNotFound(t *testing.T) {
	e := start(t)
	ep := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "https://example.com/hook"})
	id := ep.GetId()
	e.record(t, e.acme.name, "msg-1", id)

	ctx := as(e.globex.key)
	_, err := e.eps.GetEndpoint(ctx, &dispatcherv1.GetEndpointRequest{Id: id})
	wantCode(t, "get endpoint", err, codes.NotFound)
	_, err = e.eps.UpdateEndpoint(ctx, &dispatcherv1.UpdateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Id: id, Description: "mine"}})
	wantCode(t, "update endpoint", err, codes.NotFound)
	_, err = e.eps.DeleteEndpoint(ctx, &dispatcherv1.DeleteEndpointRequest{Id: id})
	wantCode(t, "delete endpoint", err, codes.NotFound)
	_, err = e.eps.RotateEndpointSecret(ctx, &dispatcherv1.RotateEndpointSecretRequest{Id: id})
	wantCode(t, "rotate secret", err, codes.NotFound)
	_, err = e.eps.RecoverEndpoint(ctx, &dispatcherv1.RecoverEndpointRequest{Id: id})
	wantCode(t, "recover endpoint", err, codes.NotFound)
	_, err = e.eps.SendTestEvent(ctx, &dispatcherv1.SendTestEventRequest{Id: id})
	wantCode(t, "send test event", err, codes.NotFound)
	_, err = e.msgs.GetMessage(ctx, &dispatcherv1.GetMessageRequest{Id: "msg-1"})
	wantCode(t, "get message", err, codes.NotFound)
	_, err = e.msgs.ListMessageAttempts(ctx, &dispatcherv1.ListMessageAttemptsRequest{Id: "msg-1"})
	wantCode(t, "list attempts", err, codes.NotFound)
	_, err = e.msgs.ResendMessage(ctx, &dispatcherv1.ResendMessageRequest{Id: "msg-1"})
	wantCode(t, "resend message", err, codes.NotFound)
	_, err = e.msgs.ResendMessage(ctx, &dispatcherv1.ResendMessageRequest{Id: "msg-1", EndpointId: id})
	wantCode(t, "resend message to the endpoint", err, codes.NotFound)
	_, err = e.msgs.ListDeadLetters(ctx, &dispatcherv1.ListDeadLettersRequest{EndpointId: id})
	wantCode(t, "dead letters of the endpoint", err, codes.NotFound)
	if list, err := e.eps.ListEndpoints(ctx, &dispatcherv1.ListEndpointsRequest{}); err != nil || len(list.GetEndpoints()) != 0 {
		t.Errorf("list: %v, %v; want nothing", list, err)
	}

	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/endpoints/" + id, ""},
		{"PATCH", "/v1/endpoints/" + id, `{"description":"mine"}`},
		{"DELETE", "/v1/endpoints/" + id, ""},
		{"POST", "/v1/endpoints/" + id + ":rotateSecret", `{}`},
		{"POST", "/v1/endpoints/" + id + ":recover", `{}`},
		{"GET", "/v1/messages/msg-1", ""},
		{"GET", "/v1/messages/msg-1/attempts", ""},
		{"POST", "/v1/messages/msg-1:resend", `{}`},
		{"GET", "/v1/deadLetters?endpointId=" + id, ""},
	} {
		if code, body := e.rest(t, r.method, r.path, e.globex.key, r.body); code != http.StatusNotFound {
			t.Errorf("%s %s as another tenant: %d %v, want 404", r.method, r.path, code, body)
		}
	}

	// The owner still sees all of it, unchanged.
	own := as(e.acme.key)
	got, err := e.eps.GetEndpoint(own, &dispatcherv1.GetEndpointRequest{Id: id})
	if err != nil || got.GetDescription() != "" {
		t.Fatalf("owner's endpoint after the other tenant's calls: %v, %v", got, err)
	}
	m, err := e.msgs.GetMessage(own, &dispatcherv1.GetMessageRequest{Id: "msg-1"})
	if err != nil || len(m.GetDeliveries()) != 1 || m.GetDeliveries()[0].GetEndpointId() != id {
		t.Fatalf("owner's message: %v, %v", m, err)
	}
	if _, err := e.msgs.ListDeadLetters(own, &dispatcherv1.ListDeadLettersRequest{EndpointId: id}); err != nil {
		t.Fatalf("owner's dead letters of the endpoint: %v", err)
	}
	atts := e.restOK(t, "GET", "/v1/messages/msg-1/attempts", e.acme.key, "")["attempts"].([]any)
	if len(atts) != 1 {
		t.Fatalf("owner's attempts: %v", atts)
	}
}

// TestBadInputsNameTheField: every refusal is InvalidArgument (400) with a
// message that says which field is wrong.
func TestBadInputsNameTheField(t *testing.T) {
	e := start(t)
	ctx := as(e.acme.key)
	ep := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "http://10.1.2.3/hook"}) // allowlisted
	e.record(t, e.acme.name, "msg-1", ep.GetId())
	create := func(ep *dispatcherv1.Endpoint) error {
		_, err := e.eps.CreateEndpoint(ctx, &dispatcherv1.CreateEndpointRequest{Endpoint: ep})
		return err
	}
	ok := "https://example.com/hook"
	week := durationpb.New(7 * 24 * time.Hour) // the longest delay allowed
	cases := []struct {
		name  string
		err   error
		field string
	}{
		{"ftp scheme", create(&dispatcherv1.Endpoint{Url: "ftp://example.com/hook"}), "scheme"},
		{"no url", create(&dispatcherv1.Endpoint{}), "url"},
		{"private IP", create(&dispatcherv1.Endpoint{Url: "http://10.2.3.4/hook"}), "url"},
		{"loopback", create(&dispatcherv1.Endpoint{Url: "http://127.0.0.1:8080/hook"}), "url"},
		{"metadata", create(&dispatcherv1.Endpoint{Url: "http://169.254.169.254/latest/meta-data"}), "url"},
		{"mapped loopback", create(&dispatcherv1.Endpoint{Url: "http://[::ffff:127.0.0.1]/"}), "url"},
		{"partial wildcard", create(&dispatcherv1.Endpoint{Url: ok, EventTypes: []string{"stripe.inv*"}}), "event_types"},
		{"empty word", create(&dispatcherv1.Endpoint{Url: ok, EventTypes: []string{"stripe..paid"}}), "event_types"},
		{"negative rate", create(&dispatcherv1.Endpoint{Url: ok, RateLimit: -1}), "rate_limit"},
		{"negative in-flight", create(&dispatcherv1.Endpoint{Url: ok, MaxInFlight: -1}), "max_in_flight"},
		{"short timeout", create(&dispatcherv1.Endpoint{Url: ok, Timeout: durationpb.New(time.Millisecond)}), "timeout"},
		{"reserved header", create(&dispatcherv1.Endpoint{Url: ok, Headers: map[string]string{"Webhook-Signature": "x"}}), "headers"},
		{"negative retry delay", create(&dispatcherv1.Endpoint{Url: ok, RetrySchedule: []*durationpb.Duration{durationpb.New(-time.Second)}}), "retry_schedule"},
		// The default retention is 30 days.
		{"retries past the retention", create(&dispatcherv1.Endpoint{Url: ok, RetrySchedule: []*durationpb.Duration{week, week, week, week, week}}), "retry_schedule: its delays add up to 840h0m0s, which must be less than the retention period 720h0m0s"},
	}
	add := func(name string, err error, field string) {
		cases = append(cases, struct {
			name  string
			err   error
			field string
		}{name, err, field})
	}
	_, err := e.eps.ListEndpoints(ctx, &dispatcherv1.ListEndpointsRequest{PageSize: -1})
	add("list page_size", err, "page_size")
	_, err = e.eps.ListEndpoints(ctx, &dispatcherv1.ListEndpointsRequest{PageToken: "not-a-token"})
	add("list page_token", err, "page_token")
	_, err = e.msgs.ListMessageAttempts(ctx, &dispatcherv1.ListMessageAttemptsRequest{Id: "msg-1", PageSize: -1})
	add("attempts page_size", err, "page_size")
	_, err = e.msgs.ListMessageAttempts(ctx, &dispatcherv1.ListMessageAttemptsRequest{Id: "msg-1", PageToken: "not-a-token"})
	add("attempts page_token", err, "page_token")
	_, err = e.msgs.ListDeadLetters(ctx, &dispatcherv1.ListDeadLettersRequest{PageSize: -1})
	add("dead letters page_size", err, "page_size")
	_, err = e.msgs.ListDeadLetters(ctx, &dispatcherv1.ListDeadLettersRequest{PageToken: "not-a-token"})
	add("dead letters page_token", err, "page_token")
	_, err = e.eps.UpdateEndpoint(ctx, &dispatcherv1.UpdateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Id: ep.GetId(), Secret: "whsec_x"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"secret"}}})
	add("update of an output field", err, "update_mask")
	_, err = e.eps.UpdateEndpoint(ctx, &dispatcherv1.UpdateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Id: ep.GetId(), Url: "http://10.9.9.9/"}})
	add("update to a private IP", err, "url")
	_, err = e.eps.UpdateEndpoint(ctx, &dispatcherv1.UpdateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Id: ep.GetId(), RateLimit: -5}})
	add("update to a negative rate", err, "rate_limit")
	_, err = e.msgs.SendMessage(ctx, &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Source: e.id}})
	add("send without type", err, "type")
	_, err = e.msgs.SendMessage(ctx, &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Source: "a.b", Type: "x.y"}})
	add("send with a dotted source", err, "source")
	_, err = e.msgs.SendMessage(ctx, &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "a/b", Source: e.id, Type: "x.y"}})
	add("send with a bad id", err, "id")

	for _, c := range cases {
		if status.Code(c.err) != codes.InvalidArgument || !strings.Contains(status.Convert(c.err).Message(), c.field) {
			t.Errorf("%s: %v, want InvalidArgument naming %s", c.name, c.err, c.field)
		}
	}
	if got, _ := e.eps.GetEndpoint(ctx, &dispatcherv1.GetEndpointRequest{Id: ep.GetId()}); got.GetUrl() != "http://10.1.2.3/hook" || got.GetRateLimit() != 0 {
		t.Errorf("refused updates changed the endpoint: %v", got)
	}

	for _, r := range []struct{ method, path, body, field string }{
		{"POST", "/v1/endpoints", `{"url":"ftp://example.com/hook"}`, "scheme"},
		{"POST", "/v1/endpoints", `{"url":"http://192.168.1.1/hook"}`, "url"},
		{"POST", "/v1/endpoints", `{"url":"https://example.com/","eventTypes":["a.b*"]}`, "event_types"},
		{"POST", "/v1/endpoints", `{"url":"https://example.com/","maxInFlight":-3}`, "max_in_flight"},
		{"GET", "/v1/endpoints?pageSize=-1", "", "page_size"},
		{"GET", "/v1/endpoints?page_token=zzz", "", "page_token"},
		{"GET", "/v1/messages/msg-1/attempts?pageSize=-2", "", "page_size"},
		{"GET", "/v1/deadLetters?pageToken=zzz", "", "page_token"},
		{"PATCH", "/v1/endpoints/" + ep.GetId(), `{"url":"javascript:alert(1)"}`, "url"},
		{"POST", "/v1/messages", `{"source":"` + e.id + `","data":{}}`, "type"},
	} {
		code, body := e.rest(t, r.method, r.path, e.acme.key, r.body)
		if msg, _ := body["message"].(string); code != http.StatusBadRequest || !strings.Contains(msg, r.field) {
			t.Errorf("%s %s %s: %d %v, want 400 naming %s", r.method, r.path, r.body, code, body, r.field)
		}
	}
}

func TestUpdateEndpoint(t *testing.T) {
	e := start(t)
	ctx := as(e.acme.key)
	const url = "https://example.com/hook"
	ep := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: url, Description: "one", EventTypes: []string{"a.*"}, RateLimit: 5})
	id := ep.GetId()
	update := func(in *dispatcherv1.Endpoint, paths ...string) *dispatcherv1.Endpoint {
		t.Helper()
		in.Id = id
		r := &dispatcherv1.UpdateEndpointRequest{Endpoint: in}
		if paths != nil {
			r.UpdateMask = &fieldmaskpb.FieldMask{Paths: paths}
		}
		out, err := e.eps.UpdateEndpoint(ctx, r)
		if err != nil {
			t.Fatalf("update %v: %v", paths, err)
		}
		if out.GetSecret() != "" {
			t.Fatal("update shows the secret")
		}
		return out
	}
	get := func() *dispatcherv1.Endpoint {
		t.Helper()
		out, err := e.eps.GetEndpoint(ctx, &dispatcherv1.GetEndpointRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	// With a mask, only the named fields change.
	got := update(&dispatcherv1.Endpoint{Description: "two", Url: "https://changed.example.com/"}, "description")
	if got.GetDescription() != "two" || got.GetUrl() != url {
		t.Fatalf("masked update: %v", got)
	}
	// A masked field that is unset in the request is cleared.
	if got := update(&dispatcherv1.Endpoint{}, "rate_limit"); got.GetRateLimit() != 0 || got.GetDescription() != "two" {
		t.Fatalf("clearing rate_limit: %v", got)
	}
	// Without a mask (gRPC), the fields set in the request change.
	got = update(&dispatcherv1.Endpoint{MaxInFlight: 3})
	if got.GetMaxInFlight() != 3 || got.GetDescription() != "two" || got.GetUrl() != url || strings.Join(got.GetEventTypes(), ",") != "a.*" {
		t.Fatalf("unmasked update: %v", got)
	}

	// REST without update_mask: the gateway takes the mask from the body,
	// so the fields present change (even to empty) and the others stay.
	path := "/v1/endpoints/" + id
	e.restOK(t, "PATCH", path, e.acme.key, `{"description":"three","eventTypes":["b.#"]}`)
	if got := get(); got.GetDescription() != "three" || strings.Join(got.GetEventTypes(), ",") != "b.#" || got.GetUrl() != url || got.GetMaxInFlight() != 3 {
		t.Fatalf("REST update: %v", got)
	}
	e.restOK(t, "PATCH", path, e.acme.key, `{"eventTypes":[]}`)
	if got := get(); len(got.GetEventTypes()) != 0 || got.GetDescription() != "three" {
		t.Fatalf("REST update clearing event_types: %v", got)
	}
	// REST with update_mask: only the masked fields, whatever the body says.
	e.restOK(t, "PATCH", path+"?update_mask=description", e.acme.key, `{"description":"four","url":"ftp://ignored","maxInFlight":9}`)
	if got := get(); got.GetDescription() != "four" || got.GetUrl() != url || got.GetMaxInFlight() != 3 {
		t.Fatalf("REST masked update: %v", got)
	}
	// An edit keeps the endpoint's failure run (auto-disable counts from
	// its start); disabling by hand says so; enabling starts afresh.
	failing := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	if _, err := e.endpoints.MarkFailing(context.Background(), e.acme.name, id, failing); err != nil {
		t.Fatal(err)
	}
	if got := update(&dispatcherv1.Endpoint{Description: "five"}); !got.GetFailingSince().AsTime().Equal(failing) {
		t.Fatalf("an edit moved failing_since to %v, want %v", got.GetFailingSince(), failing)
	}
	if out := e.restOK(t, "PATCH", path, e.acme.key, `{"disabled":true}`); out["disabled"] != true || out["disabledReason"] != "manual" {
		t.Fatalf("disable: %v", out)
	}
	if got := update(&dispatcherv1.Endpoint{Disabled: false}, "disabled"); got.GetDisabled() || got.GetDisabledReason() != "" || got.GetFailingSince() != nil {
		t.Fatalf("enable: %v", got)
	}
	if got := get(); got.GetUpdateTime().AsTime().Before(got.GetCreateTime().AsTime()) || got.GetDescription() != "five" {
		t.Fatalf("final: %v", got)
	}
}

func TestDeleteAndPaging(t *testing.T) {
	e := start(t)
	ctx := as(e.acme.key)
	var ids []string
	for range 5 {
		ids = append(ids, e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "https://example.com/hook"}).GetId())
	}
	var seen []string
	token := ""
	for range 10 {
		page, err := e.eps.ListEndpoints(ctx, &dispatcherv1.ListEndpointsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, ep := range page.GetEndpoints() {
			seen = append(seen, ep.GetId())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if strings.Join(seen, ",") != strings.Join(ids, ",") {
		t.Fatalf("paged list %v, want %v oldest first", seen, ids)
	}
	if code, body := e.rest(t, "DELETE", "/v1/endpoints/"+ids[1], e.acme.key, ""); code != http.StatusOK {
		t.Fatalf("delete: %d %v", code, body)
	}
	_, err := e.eps.GetEndpoint(ctx, &dispatcherv1.GetEndpointRequest{Id: ids[1]})
	wantCode(t, "get after delete", err, codes.NotFound)
	_, err = e.eps.DeleteEndpoint(ctx, &dispatcherv1.DeleteEndpointRequest{Id: ids[1]})
	wantCode(t, "delete twice", err, codes.NotFound)
	_, err = e.eps.GetEndpoint(ctx, &dispatcherv1.GetEndpointRequest{Id: "not-a-uuid"})
	wantCode(t, "get of a malformed id", err, codes.NotFound)
	list := e.restOK(t, "GET", "/v1/endpoints?pageSize=10", e.acme.key, "")["endpoints"].([]any)
	if len(list) != 4 {
		t.Fatalf("list after delete: %d endpoints, want 4", len(list))
	}
}

// TestSendMessageIsIdempotent: a repeated id is answered without a second
// publish; a new id is a new message.
func TestSendMessageIsIdempotent(t *testing.T) {
	e := start(t)
	ctx := as(e.acme.key)
	data, _ := structpb.NewValue(map[string]any{"order": 1})
	send := &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "order-1", Source: e.id, Type: "order.created", Data: data}}
	first, err := e.msgs.SendMessage(ctx, send)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetId() != "order-1" || first.GetSource() != e.id || first.GetType() != "order.created" {
		t.Fatalf("send: %v", first)
	}
	again, err := e.msgs.SendMessage(ctx, send)
	if err != nil || again.GetId() != "order-1" {
		t.Fatalf("repeat: %v, %v", again, err)
	}
	sends := e.sends
	if state, _, err := sends.Claim(context.Background(), sends.Key(e.acme.name, e.id, "order-1")); err != nil || state != dedupe.Done {
		t.Fatalf("id after two sends: state %v, %v; want done", state, err)
	}
	// While another call is still publishing an id, a repeat is not told
	// it succeeded: that call may yet fail.
	state, claim, err := sends.Claim(context.Background(), sends.Key(e.acme.name, e.id, "order-9"))
	if err != nil || state != dedupe.Claimed {
		t.Fatal(state, err)
	}
	order9 := &dispatcherv1.SendMessageRequest{Message: &dispatcherv1.Message{Id: "order-9", Source: e.id, Type: "order.created", Data: data}}
	if _, err := e.msgs.SendMessage(ctx, order9); status.Code(err) != codes.Aborted {
		t.Fatalf("repeat during another send: %v, want Aborted", err)
	}
	if err := sends.Release(context.Background(), claim); err != nil {
		t.Fatal(err)
	}
	if _, err := e.msgs.SendMessage(ctx, order9); err != nil {
		t.Fatalf("send after the other call gave up: %v", err)
	}
	out := e.restOK(t, "POST", "/v1/messages", e.acme.key, `{"source":"`+e.id+`","type":"order.created","data":{"order":2}}`)
	if id, _ := out["id"].(string); id == "" || id == "order-1" {
		t.Fatalf("send without id: %v", out)
	}
	// Another tenant's ids are its own.
	if _, err := e.msgs.SendMessage(as(e.globex.key), send); err != nil {
		t.Fatal(err)
	}
}

// An endpoint that leaves max_in_flight and timeout unset is shown with the
// values it is delivered with (the server's defaults), not 0 and null.
func TestEndpointShowsEffectiveDefaults(t *testing.T) {
	e := start(t)
	ep := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "https://example.com/hook"})
	check := func(what string, got *dispatcherv1.Endpoint) {
		t.Helper()
		if got.GetMaxInFlight() != 10 || got.GetTimeout().AsDuration() != 15*time.Second {
			t.Errorf("%s: maxInFlight %d, timeout %v; want the defaults 10 and 15s", what, got.GetMaxInFlight(), got.GetTimeout())
		}
	}
	check("create", ep)
	got, err := e.eps.GetEndpoint(as(e.acme.key), &dispatcherv1.GetEndpointRequest{Id: ep.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	check("get", got)
	list, err := e.eps.ListEndpoints(as(e.acme.key), &dispatcherv1.ListEndpointsRequest{})
	if err != nil || len(list.GetEndpoints()) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	check("list", list.GetEndpoints()[0])
	body := e.restOK(t, "GET", "/v1/endpoints/"+ep.GetId(), e.acme.key, "")
	if body["maxInFlight"] != float64(10) || body["timeout"] != "15s" {
		t.Errorf("REST: maxInFlight %v, timeout %v", body["maxInFlight"], body["timeout"])
	}
	// An endpoint's own values are kept.
	own := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "https://example.com/other", MaxInFlight: 3, Timeout: durationpb.New(2 * time.Second)})
	if own.GetMaxInFlight() != 3 || own.GetTimeout().AsDuration() != 2*time.Second {
		t.Errorf("own values: %d %v", own.GetMaxInFlight(), own.GetTimeout())
	}
}

// A resent delivery starts its retry schedule again, but its attempts keep
// counting: the log numbers each endpoint's attempts 1, 2, 3… in order,
// whatever number the attempt was made under, on every page.
func TestAttemptsNumberedAcrossResends(t *testing.T) {
	e := start(t)
	a := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "https://example.com/a"}).GetId()
	b := e.create(t, e.acme.key, &dispatcherv1.Endpoint{Url: "https://example.com/b"}).GetId()
	e.record(t, e.acme.name, "msg-r", a) // a: attempt 1
	ctx := context.Background()
	// a retried once, then resent twice (the worker numbers a resend's
	// first attempt 1); b attempted once in between.
	for _, att := range []*dispatcherv1.Attempt{
		{EndpointId: a, Number: 2}, {EndpointId: b, Number: 1}, {EndpointId: a, Number: 1}, {EndpointId: a, Number: 1},
	} {
		if err := e.store.AddAttempt(ctx, e.acme.name, "msg-r", att); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]int32{a: {1, 2, 3, 4}, b: {1}}
	got := map[string][]int32{}
	token := ""
	for {
		page, err := e.msgs.ListMessageAttempts(as(e.acme.key), &dispatcherv1.ListMessageAttemptsRequest{Id: "msg-r", PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, att := range page.GetAttempts() {
			got[att.GetEndpointId()] = append(got[att.GetEndpointId()], att.GetNumber())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	for ep, w := range want {
		if !slices.Equal(got[ep], w) {
			t.Errorf("endpoint %s: attempt numbers %v, want %v", ep, got[ep], w)
		}
	}
}

// Refusals carry the wrong field as a BadRequest field violation.
func TestValidationDetailsNameTheField(t *testing.T) {
	e := start(t)
	_, err := e.eps.CreateEndpoint(as(e.acme.key), &dispatcherv1.CreateEndpointRequest{Endpoint: &dispatcherv1.Endpoint{Url: "ftp://example.com/"}})
	var fields []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if !slices.Equal(fields, []string{"url"}) {
		t.Fatalf("field violations %v, want [url] (%v)", fields, err)
	}
}
