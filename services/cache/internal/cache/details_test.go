package cache

import (
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
)

// violation returns the field of err's BadRequest detail, failing the test
// when err is not INVALID_ARGUMENT with an ErrorInfo and a BadRequest.
func violation(t *testing.T, err error) string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
	var info *errdetails.ErrorInfo
	var br *errdetails.BadRequest
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			br = d
		}
	}
	if info == nil || info.GetDomain() != "hookyard.cache.v1" || info.GetReason() != "INVALID_ARGUMENT" {
		t.Fatalf("%v: ErrorInfo %v", err, info)
	}
	if br == nil || len(br.GetFieldViolations()) == 0 {
		t.Fatalf("%v: no field violations", err)
	}
	return br.GetFieldViolations()[0].GetField()
}

func TestValidationErrorsCarryDetails(t *testing.T) {
	h := newHarness(t, 1, false)
	c := h.replicas[0]
	ctx := tenantCtx("acme")
	for want, ns := range map[string]*cachev1.Namespace{
		"ttl":                    {Name: "x", Strategy: "cache_aside", Ttl: durationpb.New(-1)},
		"origin_url":             {Name: "x", Strategy: "read_through"},
		"near_cache.max_entries": {Name: "x", Strategy: "cache_aside", NearCache: &cachev1.NearCache{}},
		"strategy":               {Name: "x", Strategy: "lazy"},
	} {
		_, err := c.API.CreateNamespace(ctx, &cachev1.CreateNamespaceRequest{Namespace: ns})
		if got := violation(t, err); got != want {
			t.Errorf("%v: field %q, want %q", err, got, want)
		}
	}
	createNS(t, c, "acme", &cachev1.Namespace{Name: "kv", Strategy: "cache_aside", MaxValueBytes: 4})
	_, err := c.API.PutKey(ctx, &cachev1.PutKeyRequest{Ns: "kv", Key: "k", Entry: &cachev1.Entry{Value: []byte("too long")}})
	if got := violation(t, err); got != "entry.value" {
		t.Errorf("%v: field %q", err, got)
	}
	_, err = c.API.GetKey(ctx, &cachev1.GetKeyRequest{Ns: "kv", Key: ""})
	if got := violation(t, err); got != "key" {
		t.Errorf("%v: field %q", err, got)
	}
	_, err = c.API.InvalidateNamespace(ctx, &cachev1.InvalidateNamespaceRequest{Ns: "kv", Patterns: []string{"a?b"}})
	if got := violation(t, err); got != "patterns" {
		t.Errorf("%v: field %q", err, got)
	}
}
