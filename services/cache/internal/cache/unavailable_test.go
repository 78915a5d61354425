package cache

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
)

// unavailable returns err's ErrorInfo reason and message, failing the
// test unless err is UNAVAILABLE with an ErrorInfo of the cache's domain
// and a RetryInfo.
func unavailable(t *testing.T, err error) (reason, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
	var info *errdetails.ErrorInfo
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	if info == nil || info.GetDomain() != "hookyard.cache.v1" || info.GetReason() == "" {
		t.Fatalf("%v: ErrorInfo %v", err, info)
	}
	if retry.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("%v: RetryInfo %v", err, retry)
	}
	return info.GetReason(), st.Message()
}

// An origin that fails is reported with its answer, a reason programs can
// test and a retry hint.
func TestOriginFailureCarriesDetails(t *testing.T) {
	h := newHarness(t, 1, false)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
	c := h.replicas[0]
	createNS(t, c, "acme", &cachev1.Namespace{Name: "users", OriginUrl: h.url("/{key}")})
	_, err := get(c, "acme", "users", "1")
	reason, msg := unavailable(t, err)
	if reason != "ORIGIN_UNAVAILABLE" || !strings.Contains(msg, "502") {
		t.Fatalf("reason %q, message %q; want ORIGIN_UNAVAILABLE saying what the origin answered", reason, msg)
	}
}

// A Redis failure is reported as the cache store being unavailable, with
// a retry hint; Redis's own error text (hosts, keys) stays in the log.
func TestRedisFailureCarriesDetails(t *testing.T) {
	h := newHarness(t, 1, false)
	h.setOrigin(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("v")) })
	createNS(t, h.replicas[0], "acme", &cachev1.Namespace{Name: "users", OriginUrl: h.url("/{key}")})

	rdb, err := redisconn.Open(redistest.URL())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(h.cfg, Deps{Redis: rdb, AllowCIDRs: "127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := get(c, "acme", "users", "1"); err != nil { // the namespace is now known to c
		t.Fatal(err)
	}
	rdb.Close()
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"get", func() error { _, err := get(c, "acme", "users", "1"); return err }},
		{"put", func() error {
			_, err := c.API.PutKey(tenantCtx("acme"), &cachev1.PutKeyRequest{Ns: "users", Key: "1", Entry: &cachev1.Entry{Value: []byte("x")}})
			return err
		}},
		{"delete", func() error {
			_, err := c.API.DeleteKey(tenantCtx("acme"), &cachev1.DeleteKeyRequest{Ns: "users", Key: "1"})
			return err
		}},
		{"invalidate", func() error {
			_, err := c.API.InvalidateNamespace(tenantCtx("acme"), &cachev1.InvalidateNamespaceRequest{Ns: "users", Tags: []string{"t"}})
			return err
		}},
		{"namespace", func() error {
			_, err := c.API.GetNamespace(tenantCtx("acme"), &cachev1.GetNamespaceRequest{Name: "users"})
			return err
		}},
	} {
		reason, msg := unavailable(t, call.do())
		if reason != "UNAVAILABLE" || !strings.Contains(msg, "temporarily unavailable") || strings.Contains(msg, "redis") || strings.Contains(msg, "closed") {
			t.Errorf("%s: reason %q, message %q; want UNAVAILABLE without Redis's error text", call.name, reason, msg)
		}
	}
}
