package auth

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestParseKeys(t *testing.T) {
	bad := []string{"nokey", "t:", ":k123456789", "t:short", "bad tenant:k123456789", "a:k123456789,b:k123456789"}
	for _, s := range bad {
		if _, err := ParseKeys(s); err == nil {
			t.Errorf("ParseKeys(%q) accepted", s)
		}
	}
	k, err := ParseKeys(" acme:key-acme-1 , globex:key-globex-1,acme:key-acme-2 ")
	if err != nil {
		t.Fatal(err)
	}
	if k.Len() != 3 {
		t.Fatalf("Len = %d", k.Len())
	}
	for header, want := range map[string]string{
		"Bearer key-acme-1":   "acme",
		"bearer key-acme-2":   "acme",
		"Bearer key-globex-1": "globex",
	} {
		got, err := k.Authenticate(header)
		if err != nil || got != want {
			t.Errorf("Authenticate(%q) = %q, %v; want %q", header, got, err, want)
		}
	}
	for header, want := range map[string]error{
		"":                  ErrMissing,
		"key-acme-1":        ErrMissing,
		"Basic key-acme-1":  ErrMissing,
		"Bearer ":           ErrMissing,
		"Bearer key-acme-9": ErrUnknown,
	} {
		if _, err := k.Authenticate(header); !errors.Is(err, want) {
			t.Errorf("Authenticate(%q) err = %v, want %v", header, err, want)
		}
	}
}

func TestNoKeysRefusesEverything(t *testing.T) {
	k, err := ParseKeys("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Authenticate("Bearer anything-at-all"); !errors.Is(err, ErrNoKeys) {
		t.Fatalf("err = %v", err)
	}
}

func TestInterceptor(t *testing.T) {
	k, _ := ParseKeys("acme:key-acme-1")
	ic := k.UnaryInterceptor(PublicPrefixes("/open.Svc/"))
	var seen string
	h := func(ctx context.Context, _ any) (any, error) {
		seen, _ = Tenant(ctx)
		return "ok", nil
	}
	call := func(method, header string) error {
		ctx := context.Background()
		if header != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", header))
		}
		seen = ""
		_, err := ic(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, h)
		return err
	}
	if err := call("/x.Svc/Get", ""); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no key: %v", err)
	}
	if err := call("/x.Svc/Get", "Bearer wrong-key-1"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong key: %v", err)
	}
	if err := call("/x.Svc/Get", "Bearer key-acme-1"); err != nil || seen != "acme" {
		t.Errorf("good key: err %v tenant %q", err, seen)
	}
	if err := call("/grpc.health.v1.Health/Check", ""); err != nil {
		t.Errorf("health must be open: %v", err)
	}
	if err := call("/open.Svc/Receive", ""); err != nil || seen != "" {
		t.Errorf("public method: err %v tenant %q", err, seen)
	}
}

// Authenticating a call reads its authorization header only: the cost
// does not grow with the other headers the call carries.
func TestInterceptorCostDoesNotGrowWithHeaders(t *testing.T) {
	k, _ := ParseKeys("acme:key-acme-1")
	ic := k.UnaryInterceptor(PublicPrefixes())
	info := &grpc.UnaryServerInfo{FullMethod: "/x.Svc/Get"}
	h := func(context.Context, any) (any, error) { return nil, nil }
	allocs := func(pairs ...string) float64 {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(append(pairs, "authorization", "Bearer key-acme-1")...))
		return testing.AllocsPerRun(200, func() {
			if _, err := ic(ctx, nil, info, h); err != nil {
				t.Fatal(err)
			}
		})
	}
	few := allocs()
	many := allocs("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "user-agent", "grpc-go/1.79",
		"content-type", "application/grpc", ":authority", "127.0.0.1:9090", "x-request-id", "r1", "x-forwarded-for", "10.0.0.1")
	if many > few {
		t.Fatalf("a call with 6 more headers allocates %.0f times, one with none %.0f: the interceptor copies every header", many, few)
	}
}

func TestCheckServiceKey(t *testing.T) {
	call := func(header string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", header))
	}
	if err := CheckServiceKey(call("Bearer service-key-1"), "service-key-1"); err != nil {
		t.Errorf("right key: %v", err)
	}
	for _, c := range []struct{ header, want string }{
		{"Bearer other-key", "service-key-1"},
		{"", "service-key-1"},
		{"Bearer service-key-1", ""}, // none configured refuses everything
	} {
		if err := CheckServiceKey(call(c.header), c.want); status.Code(err) != codes.Unauthenticated {
			t.Errorf("header %q, key %q: %v, want Unauthenticated", c.header, c.want, err)
		}
	}
	md, _ := ServiceCredentials("k1").GetRequestMetadata(context.Background())
	if err := CheckServiceKey(metadata.NewIncomingContext(context.Background(), metadata.New(md)), "k1"); err != nil {
		t.Errorf("client credentials: %v", err)
	}
}
