package api

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	"github.com/hookyard/hookyard/services/ingress/internal/source"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func newSources(t *testing.T) *Sources {
	t.Helper()
	rdb, prefix := redistest.New(t, "sources")
	return &Sources{Store: source.New(rdb, prefix)}
}

func code(err error) codes.Code { return status.Code(err) }

func TestSourcesLifecycleAndTenancy(t *testing.T) {
	s := newSources(t)
	acme := auth.WithTenant(context.Background(), "acme")
	globex := auth.WithTenant(context.Background(), "globex")
	name := fmt.Sprintf("stripe-%d", time.Now().UnixNano()%1e9)

	created, err := s.CreateSource(acme, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
		Name: name, Provider: "stripe", Secrets: []string{"whsec_abcdefghijklmnop1234"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if created.GetSecrets()[0] != "****1234" || created.GetCreateTime() == nil {
		t.Fatalf("create returned %v", created)
	}
	if _, err := s.CreateSource(globex, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
		Name: name, Provider: "github", Secrets: []string{"x-secret-long-enough"},
	}}); code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := s.GetSource(globex, &ingressv1.GetSourceRequest{Name: name}); code(err) != codes.NotFound {
		t.Fatalf("other tenant get: %v", err)
	}
	if _, err := s.DeleteSource(globex, &ingressv1.DeleteSourceRequest{Name: name}); code(err) != codes.NotFound {
		t.Fatalf("other tenant delete: %v", err)
	}
	if _, err := s.UpdateSource(globex, &ingressv1.UpdateSourceRequest{Source: &ingressv1.Source{Name: name, PublicUrl: "https://x"}}); code(err) != codes.NotFound {
		t.Fatalf("other tenant update: %v", err)
	}
	if l, err := s.ListSources(globex, &ingressv1.ListSourcesRequest{}); err != nil || len(l.GetSources()) != 0 {
		t.Fatalf("other tenant list: %v %v", l, err)
	}
	if _, err := s.GetSource(context.Background(), &ingressv1.GetSourceRequest{Name: name}); code(err) != codes.Unauthenticated {
		t.Fatalf("no tenant: %v", err)
	}

	// Rotate: add a second secret with a mask; tolerance off.
	up, err := s.UpdateSource(acme, &ingressv1.UpdateSourceRequest{
		Source:     &ingressv1.Source{Name: name, Secrets: []string{"whsec_abcdefghijklmnop1234", "whsec_newnewnewnewnew5678"}, Tolerance: durationpb.New(0)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"secrets", "tolerance"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(up.GetSecrets()) != 2 || up.GetTolerance().AsDuration() != 0 || up.GetProvider() != "stripe" {
		t.Fatalf("update gave %v", up)
	}
	if _, err := s.UpdateSource(acme, &ingressv1.UpdateSourceRequest{
		Source: &ingressv1.Source{Name: name, Secrets: []string{"****1234"}},
	}); code(err) != codes.InvalidArgument {
		t.Fatalf("writing back a masked secret: %v", err)
	}
	if _, err := s.DeleteSource(acme, &ingressv1.DeleteSourceRequest{Name: name}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSource(acme, &ingressv1.GetSourceRequest{Name: name}); code(err) != codes.NotFound {
		t.Fatalf("after delete: %v", err)
	}
}

func TestCreateValidation(t *testing.T) {
	s := newSources(t)
	acme := auth.WithTenant(context.Background(), "acme")
	bad := map[string]*ingressv1.Source{
		"name":      {Name: "Bad.Name", Provider: "stripe", Secrets: []string{"s"}},
		"provider":  {Name: "ok", Provider: "myspace", Secrets: []string{"s"}},
		"secrets":   {Name: "ok", Provider: "stripe"},
		"tolerance": {Name: "ok", Provider: "stripe", Secrets: []string{"s"}, Tolerance: durationpb.New(-time.Second)},
		"twilio":    {Name: "ok", Provider: "twilio", Secrets: []string{"s"}},
		"hmac":      {Name: "ok", Provider: "hmac", Secrets: []string{"s"}},
		"body":      {Name: "ok", Provider: "stripe", Secrets: []string{"s"}, MaxBodyBytes: 1 << 30},
		"discord":   {Name: "ok", Provider: "discord", Secrets: []string{"not-a-hex-key"}},
	}
	for what, src := range bad {
		_, err := s.CreateSource(acme, &ingressv1.CreateSourceRequest{Source: src})
		if code(err) != codes.InvalidArgument {
			t.Errorf("%s: got %v, want InvalidArgument", what, err)
			continue
		}
		if !strings.Contains(strings.ToLower(status.Convert(err).Message()), what) {
			t.Errorf("%s: message does not name the field: %s", what, status.Convert(err).Message())
		}
	}
	if _, err := s.CreateSource(acme, &ingressv1.CreateSourceRequest{}); code(err) != codes.InvalidArgument {
		t.Errorf("empty request: %v", err)
	}
}

func TestListPagination(t *testing.T) {
	s := newSources(t)
	acme := auth.WithTenant(context.Background(), "acme")
	base := fmt.Sprintf("p%d", time.Now().UnixNano()%1e9)
	for i := range 7 {
		if _, err := s.CreateSource(acme, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
			Name: fmt.Sprintf("%s-%d", base, i), Provider: "github", Secrets: []string{"gh-secret"},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	token := ""
	for page := 0; ; page++ {
		resp, err := s.ListSources(acme, &ingressv1.ListSourcesRequest{PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetSources()) > 3 {
			t.Fatalf("page of %d", len(resp.GetSources()))
		}
		for _, src := range resp.GetSources() {
			names = append(names, src.GetName())
		}
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(names) != 7 || names[0] != base+"-0" || names[6] != base+"-6" {
		t.Fatalf("listed %v", names)
	}
	if _, err := s.ListSources(acme, &ingressv1.ListSourcesRequest{PageToken: "!!"}); code(err) != codes.InvalidArgument {
		t.Fatalf("bad token: %v", err)
	}
}

// Concurrent updates of different fields all take effect: each merges
// into the source as stored when it is written, not as it was read.
func TestConcurrentUpdatesKeepEachOther(t *testing.T) {
	s := newSources(t)
	acme := auth.WithTenant(context.Background(), "acme")
	name := fmt.Sprintf("conc-%d", time.Now().UnixNano()%1e9)
	if _, err := s.CreateSource(acme, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
		Name: name, Provider: "stripe", Secrets: []string{"whsec_abcdefghijklmnop1234"},
	}}); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		tol, size := time.Duration(round+10)*time.Second, int64(4096+round)
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := &ingressv1.UpdateSourceRequest{Source: &ingressv1.Source{Name: name, Tolerance: durationpb.New(tol)}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"tolerance"}}}
				if i%2 == 1 {
					r = &ingressv1.UpdateSourceRequest{Source: &ingressv1.Source{Name: name, MaxBodyBytes: size}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"max_body_bytes"}}}
				}
				if _, err := s.UpdateSource(acme, r); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent update: %v", err)
		}
		got, err := s.GetSource(acme, &ingressv1.GetSourceRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetTolerance().AsDuration() != tol || got.GetMaxBodyBytes() != size {
			t.Fatalf("round %d: tolerance %v, max_body_bytes %d; want %v and %d (an update was lost)", round, got.GetTolerance().AsDuration(), got.GetMaxBodyBytes(), tol, size)
		}
	}
}

// A public_url with credentials is never echoed whole: not in a refusal,
// not when the stored source is read back.
func TestPublicURLCredentialsRedacted(t *testing.T) {
	s := newSources(t)
	acme := auth.WithTenant(context.Background(), "acme")
	_, err := s.CreateSource(acme, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
		Name: "tw-bad", Provider: "twilio", Secrets: []string{"twilio-auth-token-123"},
		PublicUrl: "https://user:s3cretpass@exa mple.com/hook",
	}})
	if code(err) != codes.InvalidArgument {
		t.Fatalf("bad public_url: %v", err)
	}
	if strings.Contains(err.Error(), "s3cretpass") {
		t.Errorf("refusal echoes the password: %v", err)
	}
	name := "tw-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))[:20]
	src, err := s.CreateSource(acme, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
		Name: name, Provider: "twilio", Secrets: []string{"twilio-auth-token-123"},
		PublicUrl: "https://user:s3cretpass@example.com/hook",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(src.GetPublicUrl(), "s3cretpass") {
		t.Errorf("create answers the password: %s", src.GetPublicUrl())
	}
	got, err := s.GetSource(acme, &ingressv1.GetSourceRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got.GetPublicUrl(), "s3cretpass") || !strings.Contains(got.GetPublicUrl(), "example.com/hook") {
		t.Errorf("get answers %s", got.GetPublicUrl())
	}
}

// The masked URL a client read back is refused rather than stored over the
// real credentials.
func TestMaskedPublicURLRefused(t *testing.T) {
	s := newSources(t)
	acme := auth.WithTenant(context.Background(), "acme")
	_, err := s.CreateSource(acme, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
		Name: "tw-masked", Provider: "twilio", Secrets: []string{"twilio-auth-token-123"},
		PublicUrl: "https://user:xxxxx@example.com/hook",
	}})
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "masked") {
		t.Fatalf("masked public_url: %v", err)
	}
}

// Refusals carry the wrong fields as BadRequest field violations, for
// programs; the message still says it for people.
func TestValidationDetailsNameTheFields(t *testing.T) {
	s := newSources(t)
	acme := auth.WithTenant(context.Background(), "acme")
	_, err := s.CreateSource(acme, &ingressv1.CreateSourceRequest{Source: &ingressv1.Source{
		Name: "Bad.Name", Provider: "myspace", Secrets: []string{"s"},
	}})
	var fields []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if !slices.Contains(fields, "name") || !slices.Contains(fields, "provider") {
		t.Fatalf("field violations %v, want name and provider (%v)", fields, err)
	}
}
