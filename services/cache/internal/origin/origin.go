// Package origin calls a namespace's origin over HTTP, through the shared
// SSRF-safe client: reads for fills, writes for write-through and
// write-behind. Responses are bounded by the namespace's value size.
package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/cache/internal/namespace"
)

// Client calls origins.
type Client struct {
	HTTP *http.Client
}

// ErrNotFound means the origin answered 404 or 410.
var ErrNotFound = errors.New("origin has no such key")

// Error is an origin failure: a transport error, a timeout, a refused
// address, an unexpected status or an oversized response.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return e.Reason }

// URL expands a template for key.
func URL(tmpl, key string) string { return strings.ReplaceAll(tmpl, "{key}", url.PathEscape(key)) }

// Result of a load.
type Result struct {
	Value []byte
	// Tags from the origin's Cache-Tag header (comma-separated).
	Tags []string
}

// Load reads key from ns's origin.
func (c *Client) Load(ctx context.Context, ns *cachev1.Namespace, key string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, namespace.Timeout(ns))
	defer cancel()
	u := URL(ns.GetOriginUrl(), key)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Result{}, &Error{Reason: fmt.Sprintf("origin url %q: %v", u, err)}
	}
	for k, v := range ns.GetHeaders() {
		req.Header.Set(k, v)
	}
	trace.InjectHTTP(ctx, req.Header)
	start := time.Now()
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Result{}, &Error{Reason: fmt.Sprintf("origin GET %s: %v", redact(u), unwrap(err, time.Since(start)))}
	}
	defer resp.Body.Close()
	limit := namespace.MaxValueBytes(ns)
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return Result{}, ErrNotFound
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return Result{}, &Error{Status: resp.StatusCode, Reason: fmt.Sprintf("origin GET %s answered %s", redact(u), resp.Status)}
	}
	if resp.ContentLength > limit {
		return Result{}, &Error{Status: resp.StatusCode, Reason: fmt.Sprintf("origin GET %s: value of %d bytes exceeds max_value_bytes %d", redact(u), resp.ContentLength, limit)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return Result{}, &Error{Status: resp.StatusCode, Reason: fmt.Sprintf("origin GET %s: reading the body: %v", redact(u), err)}
	}
	if int64(len(b)) > limit {
		return Result{}, &Error{Status: resp.StatusCode, Reason: fmt.Sprintf("origin GET %s: value exceeds max_value_bytes %d", redact(u), limit)}
	}
	var tags []string
	for t := range strings.SplitSeq(resp.Header.Get("Cache-Tag"), ",") {
		if t = strings.TrimSpace(t); t != "" && namespace.ValidKey(t) == nil && len(tags) < 32 {
			tags = append(tags, t)
		}
	}
	return Result{Value: b, Tags: tags}, nil
}

// Write sends value for key to ns's write URL; any 2xx is success.
func (c *Client) Write(ctx context.Context, ns *cachev1.Namespace, key string, value []byte) error {
	ctx, cancel := context.WithTimeout(ctx, namespace.Timeout(ns))
	defer cancel()
	u := URL(namespace.WriteURL(ns), key)
	method := namespace.WriteMethod(ns)
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(value))
	if err != nil {
		return &Error{Reason: fmt.Sprintf("origin url %q: %v", u, err)}
	}
	for k, v := range ns.GetHeaders() {
		req.Header.Set(k, v)
	}
	trace.InjectHTTP(ctx, req.Header)
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	start := time.Now()
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return &Error{Reason: fmt.Sprintf("origin %s %s: %v", method, redact(u), unwrap(err, time.Since(start)))}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &Error{Status: resp.StatusCode, Reason: fmt.Sprintf("origin %s %s answered %s", method, redact(u), resp.Status)}
	}
	return nil
}

func unwrap(err error, took time.Duration) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %s", took.Round(time.Millisecond))
	}
	return err
}

// redact drops the query and credentials of u for error messages.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(invalid url)"
	}
	p.User, p.RawQuery, p.Fragment = nil, "", ""
	return p.String()
}
