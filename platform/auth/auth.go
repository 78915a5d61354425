// Package auth authenticates management calls with tenant-scoped API keys.
//
// A key maps to exactly one tenant; the tenant travels in the context and
// every store scopes its reads by it, so a key of tenant A can never name a
// resource of tenant B (it simply is not found).
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Keys maps API keys to tenants. Keys are held as SHA-256 digests so the
// lookup's timing does not depend on how much of a guessed key matches.
type Keys struct {
	byDigest map[[32]byte]string
}

// ParseKeys parses "tenant:key[,tenant:key...]". Empty input yields no keys,
// which makes every authenticated call fail.
func ParseKeys(s string) (Keys, error) {
	k := Keys{byDigest: map[[32]byte]string{}}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		tenant, key, ok := strings.Cut(pair, ":")
		tenant, key = strings.TrimSpace(tenant), strings.TrimSpace(key)
		if !ok || tenant == "" || key == "" {
			return Keys{}, fmt.Errorf("api keys: %q is not tenant:key", redact(pair))
		}
		if !validTenant(tenant) {
			return Keys{}, fmt.Errorf("api keys: tenant %q: use letters, digits, '-' or '_' (at most 63)", tenant)
		}
		if len(key) < 8 {
			return Keys{}, fmt.Errorf("api keys: key for tenant %q is shorter than 8 characters", tenant)
		}
		d := sha256.Sum256([]byte(key))
		if prev, dup := k.byDigest[d]; dup && prev != tenant {
			return Keys{}, fmt.Errorf("api keys: one key is given to tenants %q and %q", prev, tenant)
		}
		k.byDigest[d] = tenant
	}
	return k, nil
}

func redact(pair string) string {
	if i := strings.IndexByte(pair, ':'); i >= 0 {
		return pair[:i+1] + "…"
	}
	if len(pair) > 4 {
		return pair[:4] + "…"
	}
	return pair
}

func validTenant(t string) bool {
	if len(t) > 63 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Len reports how many keys are configured.
func (k Keys) Len() int { return len(k.byDigest) }

// Errors returned by Authenticate.
var (
	ErrMissing = errors.New("missing API key: send Authorization: Bearer <key>")
	ErrUnknown = errors.New("unknown API key")
	ErrNoKeys  = errors.New("no API keys are configured (HOOKYARD_API_KEYS): management calls are refused")
)

// Authenticate resolves an Authorization header value to a tenant.
func (k Keys) Authenticate(header string) (string, error) {
	if len(k.byDigest) == 0 {
		return "", ErrNoKeys
	}
	scheme, key, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(key) == "" {
		return "", ErrMissing
	}
	tenant, found := k.byDigest[sha256.Sum256([]byte(strings.TrimSpace(key)))]
	if !found {
		return "", ErrUnknown
	}
	return tenant, nil
}

type tenantKey struct{}

// WithTenant returns ctx carrying tenant.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// Tenant returns the authenticated tenant of ctx.
func Tenant(ctx context.Context) (string, bool) {
	t, ok := ctx.Value(tenantKey{}).(string)
	return t, ok && t != ""
}

// MustTenant returns the tenant or an Unauthenticated status error, for
// handlers that are only reachable through the interceptor.
func MustTenant(ctx context.Context) (string, error) {
	if t, ok := Tenant(ctx); ok {
		return t, nil
	}
	return "", status.Error(codes.Unauthenticated, ErrMissing.Error())
}

// Public reports whether a full gRPC method name is open without a key.
type Public func(fullMethod string) bool

// PublicPrefixes opens every method whose full name starts with a prefix.
// Health and reflection are always open.
func PublicPrefixes(prefixes ...string) Public {
	prefixes = append(prefixes, "/grpc.health.v1.Health/", "/grpc.reflection.")
	return func(m string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(m, p) {
				return true
			}
		}
		return false
	}
}

func (k Keys) authorize(ctx context.Context, method string, public Public) (context.Context, error) {
	if public != nil && public(method) {
		return ctx, nil
	}
	// Only the one header is read: FromIncomingContext would copy every
	// header of the call, on every call.
	var header string
	if v := metadata.ValueFromIncomingContext(ctx, "authorization"); len(v) > 0 {
		header = v[0]
	}
	tenant, err := k.Authenticate(header)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return WithTenant(ctx, tenant), nil
}

// UnaryInterceptor authenticates unary calls.
func (k Keys) UnaryInterceptor(public Public) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := k.authorize(ctx, info.FullMethod, public)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor authenticates streaming calls.
func (k Keys) StreamInterceptor(public Public) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := k.authorize(ss.Context(), info.FullMethod, public)
		if err != nil {
			return err
		}
		return h(srv, &tenantStream{ServerStream: ss, ctx: ctx})
	}
}

type tenantStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *tenantStream) Context() context.Context { return s.ctx }

// ErrNoServiceKey refuses service calls on a server without a service key.
var ErrNoServiceKey = errors.New("no service key is configured (HOOKYARD_SERVICE_KEY): calls between services are refused")

// CheckServiceKey authenticates a call that another Hookyard service makes
// with the shared service key (HOOKYARD_SERVICE_KEY), sent like an API key
// as "authorization: Bearer <key>". Such methods are public to the tenant
// interceptor and call this first. The digests are compared in constant
// time.
func CheckServiceKey(ctx context.Context, want string) error {
	if want == "" {
		return status.Error(codes.Unauthenticated, ErrNoServiceKey.Error())
	}
	var header string
	if v := metadata.ValueFromIncomingContext(ctx, "authorization"); len(v) > 0 {
		header = v[0]
	}
	scheme, key, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return status.Error(codes.Unauthenticated, ErrMissing.Error())
	}
	got, exp := sha256.Sum256([]byte(strings.TrimSpace(key))), sha256.Sum256([]byte(want))
	if subtle.ConstantTimeCompare(got[:], exp[:]) != 1 {
		return status.Error(codes.Unauthenticated, "unknown service key")
	}
	return nil
}

// ValidTenant reports whether t is a tenant name ParseKeys accepts.
func ValidTenant(t string) bool { return t != "" && validTenant(t) }

// ServiceCredentials sends key as the service key on every call of a
// client connection (grpc.WithPerRPCCredentials).
type ServiceCredentials string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (k ServiceCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: the
// services talk plain gRPC inside the deployment's network.
func (ServiceCredentials) RequireTransportSecurity() bool { return false }
