package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"

	"golang.org/x/sync/semaphore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// Defaults for REST request bodies.
const (
	DefaultMaxBodyBytes    = 1 << 20
	DefaultBodyMemoryBytes = 32 << 20
	DefaultBodyWait        = 2 * time.Second
)

// Errors of BodyBudget.Read.
var (
	ErrBodyTooLarge = errors.New("request body too large")
	ErrBodyBusy     = errors.New("too many request bodies in flight; retry later")
)

// BodyBudget bounds the memory that request bodies being read and handled
// take at once. A body reserves its size before it is read (its declared
// Content-Length, or the cap when it is streamed) and gives it back when its
// handler is done, so N concurrent large requests cost at most the budget,
// not N times the cap.
//
// A request that finds the budget spent waits a little, then is refused:
// the refusal is 503 with Retry-After, because the server (not the client's
// rate) is what ran out.
type BodyBudget struct {
	sem   *semaphore.Weighted
	total int64
	wait  time.Duration
}

// NewBodyBudget returns a budget of total bytes; a request waits at most
// wait for its share.
func NewBodyBudget(total int64, wait time.Duration) *BodyBudget {
	if total <= 0 {
		total = DefaultBodyMemoryBytes
	}
	if wait <= 0 {
		wait = DefaultBodyWait
	}
	return &BodyBudget{sem: semaphore.NewWeighted(total), total: total, wait: wait}
}

// Read reads r's body, at most limit bytes, under the budget. It returns
// ErrBodyTooLarge for a body over limit (declared or read), ErrBodyBusy when
// the budget stays spent, or the read error. release must be called once
// the body is no longer used; it is never nil.
func (b *BodyBudget) Read(w http.ResponseWriter, r *http.Request, limit int64) (body []byte, release func(), err error) {
	release = func() {}
	if r.ContentLength > limit {
		return nil, release, ErrBodyTooLarge
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil, release, nil
	}
	n := limit
	if r.ContentLength > 0 {
		n = r.ContentLength
	}
	n = min(n, b.total)
	// Most requests find room at once; only those that wait pay for a
	// context with a timer.
	if !b.sem.TryAcquire(n) {
		ctx, cancel := context.WithTimeout(r.Context(), b.wait)
		err = b.sem.Acquire(ctx, n)
		cancel()
		if err != nil {
			if r.Context().Err() != nil {
				return nil, release, r.Context().Err()
			}
			return nil, release, ErrBodyBusy
		}
	}
	release = func() { b.sem.Release(n) }
	rd := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength > 0 {
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(rd, body)
	} else {
		var buf bytes.Buffer
		_, err = buf.ReadFrom(rd)
		body = buf.Bytes()
	}
	if err != nil {
		release()
		release = func() {}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, release, ErrBodyTooLarge
		}
		return nil, release, fmt.Errorf("read body: %w", err)
	}
	return body, release, nil
}

// guardREST runs in front of grpc-gateway, which reads a request's whole
// body before the gRPC interceptors (and so authentication) see the call.
// It checks the API key first, so an unauthenticated caller's body is never
// read, then reads the body under the cap and the budget.
func (s *Server) guardREST(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.opts.Keys.Authenticate(r.Header.Get("Authorization")); err != nil {
			// The unread body is not drained to keep the connection.
			w.Header().Set("Connection", "close")
			writeStatus(w, http.StatusUnauthorized, status.New(codes.Unauthenticated, err.Error()))
			return
		}
		if !validUTF8(r) {
			writeStatus(w, http.StatusBadRequest, status.New(codes.InvalidArgument, "path and query parameters must be UTF-8"))
			return
		}
		body, release, err := s.bodies.Read(w, r, s.opts.MaxBodyBytes)
		defer release()
		switch {
		case errors.Is(err, ErrBodyTooLarge):
			w.Header().Set("Connection", "close")
			writeStatus(w, http.StatusRequestEntityTooLarge, status.Newf(codes.InvalidArgument,
				"request body larger than %d bytes", s.opts.MaxBodyBytes))
			return
		case errors.Is(err, ErrBodyBusy):
			w.Header().Set("Retry-After", "1")
			writeStatus(w, http.StatusServiceUnavailable, status.New(codes.Unavailable, err.Error()))
			return
		case err != nil:
			w.Header().Set("Connection", "close")
			writeStatus(w, http.StatusBadRequest, status.New(codes.InvalidArgument, "could not read request body"))
			return
		}
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		next.ServeHTTP(w, r)
	})
}

// validUTF8 reports whether r's path and query decode to UTF-8. The gateway
// copies them into protobuf strings, which must be UTF-8: otherwise the
// call fails to marshal and the client would see a 500 for its own input.
func validUTF8(r *http.Request) bool {
	if !utf8.ValidString(r.URL.Path) {
		return false
	}
	for k, vs := range r.URL.Query() {
		if !utf8.ValidString(k) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

// writeStatus answers in the gateway's error format, so clients parse one
// shape whichever layer refused the call.
func writeStatus(w http.ResponseWriter, code int, st *status.Status) {
	b, err := protojson.Marshal(st.Proto())
	if err != nil {
		b = []byte(`{"code":` + strconv.Itoa(int(st.Code())) + `}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// gatewayError is the gateway's error handler with one correction: a
// message over the gRPC size limit is the client's oversized body (413),
// not a rate limit (429, the default for ResourceExhausted).
func gatewayError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if st, ok := status.FromError(err); ok && st.Code() == codes.ResourceExhausted &&
		strings.HasPrefix(st.Message(), "grpc: received message larger than max") {
		w.Header().Set("Connection", "close")
		writeStatus(w, http.StatusRequestEntityTooLarge, status.New(codes.InvalidArgument, "request too large"))
		return
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Internal &&
		strings.HasPrefix(st.Message(), "grpc: error while marshaling") {
		// The gateway could not encode what the client sent.
		writeStatus(w, http.StatusBadRequest, status.New(codes.InvalidArgument, "request cannot be encoded: "+strings.TrimPrefix(st.Message(), "grpc: error while marshaling: ")))
		return
	}
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int(max(1, ri.GetRetryDelay().AsDuration().Round(time.Second)/time.Second))))
			}
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}
