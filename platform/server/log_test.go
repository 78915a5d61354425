package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"

	"github.com/hookyard/hookyard/platform/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// callCtx is the context a handler sees behind the auth interceptor.
func callCtx() context.Context {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 41000}})
	return auth.WithTenant(ctx, "acme")
}

// A call whose line the logger discards builds nothing: no field, no
// formatted time, no allocation at all in the interceptor.
func TestLogUnaryBuildsNothingWhenTheLevelIsOff(t *testing.T) {
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
	ic := logUnary(log)
	info := &grpc.UnaryServerInfo{FullMethod: "/hookyard.cache.v1.CacheService/GetKey"}
	ctx := callCtx()
	resp := new(int)
	h := func(context.Context, any) (any, error) { return resp, nil }
	// The count is process-wide: goroutines left by other tests may add
	// to it, never take from it, so the least of a few runs is the
	// interceptor's own.
	allocs := -1.0
	for range 5 {
		n := testing.AllocsPerRun(1000, func() {
			if _, err := ic(ctx, nil, info, h); err != nil {
				t.Fatal(err)
			}
		})
		if allocs < 0 || n < allocs {
			allocs = n
		}
	}
	if allocs != 0 {
		t.Fatalf("a call logged at a disabled level allocates %.1f times; want 0", allocs)
	}
}

// When the level is on, the line carries the call's fields under the
// names log queries use, and an Unavailable error's logged-only cause.
func TestLogUnaryFields(t *testing.T) {
	var buf bytes.Buffer
	ic := logUnary(slog.New(slog.NewJSONHandler(&buf, nil)))
	info := &grpc.UnaryServerInfo{FullMethod: "/hookyard.cache.v1.CacheService/GetKey"}
	h := func(context.Context, any) (any, error) {
		return nil, Unavailable("hookyard.cache.v1", "the cache store", errors.New("dial tcp 10.1.2.3:6379: refused"))
	}
	if _, err := ic(callCtx(), nil, info, h); err == nil {
		t.Fatal("the handler's error was lost")
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	want := map[string]any{
		"level": "WARN", "msg": "finished call", "tenant": "acme", "protocol": "grpc",
		"grpc.component": "server", "grpc.service": "hookyard.cache.v1.CacheService", "grpc.method": "GetKey",
		"grpc.method_type": "unary", "peer.address": "10.0.0.7:41000", "grpc.code": "Unavailable",
		"grpc.error": "the cache store is temporarily unavailable; retry later",
		"cause":      "the cache store: dial tcp 10.1.2.3:6379: refused",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
	for _, k := range []string{"grpc.start_time", "grpc.time_ms"} {
		if _, ok := line[k]; !ok {
			t.Errorf("no %s in %s", k, buf.String())
		}
	}
}

// Probes are not logged at all.
func TestLogUnarySkipsHealthChecks(t *testing.T) {
	var buf bytes.Buffer
	ic := logUnary(slog.New(slog.NewJSONHandler(&buf, nil)))
	_, _ = ic(callCtx(), nil, &grpc.UnaryServerInfo{FullMethod: healthCheck}, func(context.Context, any) (any, error) { return nil, nil })
	if buf.Len() != 0 {
		t.Fatalf("health check logged: %s", buf.String())
	}
}

// A call that succeeded is logged at Debug: at the production level (Info)
// a service answering thousands of cache hits a second wrote a line for
// each. What went wrong is still logged at Info and above.
func TestLogUnarySuccessIsDebug(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: "/hookyard.cache.v1.CacheService/GetKey"}
	ok := func(context.Context, any) (any, error) { return nil, nil }
	var buf bytes.Buffer
	ic := logUnary(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if _, _ = ic(callCtx(), nil, info, ok); buf.Len() != 0 {
		t.Fatalf("a successful call logged at Info: %s", buf.String())
	}
	notFound := func(context.Context, any) (any, error) { return nil, status.Error(codes.NotFound, "no such key") }
	if _, _ = ic(callCtx(), nil, info, notFound); !bytes.Contains(buf.Bytes(), []byte(`"level":"INFO"`)) {
		t.Fatalf("a NotFound call was not logged at Info: %q", buf.String())
	}
	buf.Reset()
	ic = logUnary(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if _, _ = ic(callCtx(), nil, info, ok); !bytes.Contains(buf.Bytes(), []byte(`"level":"DEBUG"`)) || !bytes.Contains(buf.Bytes(), []byte(`"grpc.code":"OK"`)) {
		t.Fatalf("a successful call at Debug: %q", buf.String())
	}
}

// BenchmarkLogUnarySuccess is the request log's cost for a successful
// call: a JSON line at Info to /dev/null (a write per call, as to a
// container's stderr) against the line left out (Debug off).
func BenchmarkLogUnarySuccess(b *testing.B) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	info := &grpc.UnaryServerInfo{FullMethod: "/hookyard.cache.v1.CacheService/GetKey"}
	ok := func(context.Context, any) (any, error) { return nil, nil }
	for _, c := range []struct {
		name string
		lvl  slog.Level
	}{{"line written", slog.LevelDebug}, {"line left out", slog.LevelInfo}} {
		b.Run(c.name, func(b *testing.B) {
			ic := logUnary(slog.New(slog.NewJSONHandler(null, &slog.HandlerOptions{Level: c.lvl})))
			ctx := callCtx()
			b.ReportAllocs()
			for b.Loop() {
				_, _ = ic(ctx, nil, info, ok)
			}
		})
	}
}
