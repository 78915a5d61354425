// Package httptask runs the built-in "http" task: the service itself calls
// a URL, through the outbound SSRF policy, and a 2xx answer succeeds. The
// service owns the request, so the hard time limit is a deadline on it and
// holds without anyone's cooperation.
package httptask

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/jobs/internal/bus"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// Limits of an http task.
const (
	MaxBodyBytes     = 1 << 20
	MaxHeaders       = 64
	MaxResponseBytes = 64 << 10
)

// Args are the arguments of an http task, a public contract.
type Args struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// Parse checks raw as http task arguments against policy. Errors name the
// field.
func Parse(raw json.RawMessage, policy ssrf.Policy) (Args, error) {
	var a Args
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if len(raw) == 0 || dec.Decode(&a) != nil {
		return a, errors.New(`args: the http task takes an object {"url", "method", "headers" (object of strings), "body" (string)}`)
	}
	if a.URL == "" {
		return a, errors.New("args.url: required")
	}
	if err := policy.ValidateURL(a.URL); err != nil {
		return a, fmt.Errorf("args.url: %w", err)
	}
	if a.Method == "" {
		a.Method = http.MethodPost
	}
	a.Method = strings.ToUpper(a.Method)
	if !token(a.Method) {
		return a, fmt.Errorf("args.method: %q is not an HTTP method", a.Method)
	}
	if len(a.Headers) > MaxHeaders {
		return a, fmt.Errorf("args.headers: at most %d", MaxHeaders)
	}
	for k, v := range a.Headers {
		if !token(k) || strings.ContainsAny(v, "\r\n\x00") {
			return a, fmt.Errorf("args.headers: %q is not a valid header", k)
		}
	}
	if len(a.Body) > MaxBodyBytes {
		return a, fmt.Errorf("args.body: at most %d bytes", MaxBodyBytes)
	}
	return a, nil
}

func token(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// Result is what a succeeded http task stores.
type Result struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
}

// Runner consumes the http queue and runs the tasks.
type Runner struct {
	Store       *store.Store
	Conn        *rabbit.Conn
	Queue       string
	Policy      ssrf.Policy
	Concurrency int
	// Heartbeat is how often the lease is extended (and a cancel looked
	// for); the lease lasts two of them.
	Heartbeat time.Duration
	Log       *slog.Logger
	// Ended is told about every attempt this runner ends.
	Ended func(tenant, id, state string)

	client *http.Client
}

// Run consumes until ctx ends, then lets running requests finish within
// grace before handing them back.
func (r *Runner) Run(ctx context.Context, grace time.Duration) error {
	r.client = r.Policy.Client(ssrf.ClientOptions{Timeout: 24 * time.Hour, MaxIdleConnsPerHost: 16})
	return r.Conn.ConsumeWithConfig(ctx, r.Queue, rabbit.ConsumeConfig{
		Prefetch: r.Concurrency, Concurrency: r.Concurrency, ShutdownGrace: grace, Tag: "hookyard-jobs-http",
	}, r.handle)
}

func (r *Runner) handle(ctx context.Context, d amqp.Delivery) {
	ready, err := store.ParseReady(string(d.Body))
	if err != nil {
		r.Log.WarnContext(ctx, "dropping malformed note", "body", string(d.Body))
		_ = d.Ack(false)
		return
	}
	l, ok, err := r.Store.Lease(ctx, ready, "http", 2*r.Heartbeat)
	if err != nil {
		r.Log.WarnContext(ctx, "lease", "task_id", ready.ID, "err", err)
		time.Sleep(time.Second)
		if !bus.Requeue(d) {
			r.Log.ErrorContext(ctx, "note dead-lettered after repeated lease errors; the task's schedule entry publishes it again later",
				"task_id", ready.ID, "tries", bus.LeaseTries, "err", err)
		}
		return
	}
	_ = d.Ack(false)
	if !ok {
		return
	}
	// The task's trace, so the lines below join the request that
	// enqueued it (Do resumes it for the request itself).
	ctx = trace.Resume(ctx, l.Spec.Trace)
	o := r.Do(ctx, l)
	state, err := r.Store.End(context.WithoutCancel(ctx), l.Tenant, l.ID, l.Token, o)
	if r.Log.Enabled(ctx, slog.LevelDebug) {
		r.Log.DebugContext(ctx, "http task attempt", "tenant", l.Tenant, "task_id", l.ID, "state", state, "err", o.Err)
	}
	if err != nil {
		if !errors.Is(err, store.ErrLeaseLost) {
			r.Log.WarnContext(ctx, "end http task", "task_id", l.ID, "err", err)
		}
		return
	}
	if r.Ended != nil {
		r.Ended(l.Tenant, l.ID, state)
	}
}

// Do runs the attempt of l, heartbeating while it lasts, and returns its
// outcome.
func (r *Runner) Do(ctx context.Context, l *store.Lease) store.Outcome {
	ctx = trace.Resume(ctx, l.Spec.Trace)
	var a Args
	if err := json.Unmarshal(l.Spec.Args, &a); err != nil {
		return store.Outcome{Err: "args: " + err.Error(), NoRetry: true}
	}
	if a.Method == "" {
		a.Method = http.MethodPost
	}
	// The service owns the request, so the soft limit ends it as the hard
	// one would; the hard limit still bounds it if the soft one is unset.
	soft := l.Hard
	if l.Spec.SoftLimit > 0 {
		if at := time.Now().Add(l.Spec.SoftLimit); at.Before(soft) {
			soft = at
		}
	}
	rctx, cancel := context.WithDeadline(ctx, soft)
	defer cancel()
	var stop error
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(r.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
			_, cancelled, err := r.Store.Heartbeat(rctx, l.Tenant, l.ID, l.Token, 2*r.Heartbeat)
			switch {
			case errors.Is(err, store.ErrLeaseLost):
				stop = err
				cancel()
				return
			case cancelled:
				stop = errors.New("cancelled")
				cancel()
				return
			}
		}
	}()
	o := r.call(rctx, a)
	cancel()
	<-hbDone
	switch {
	case stop != nil:
		return store.Outcome{Err: stop.Error()}
	case o.Err != "" && ctx.Err() != nil:
		// The service is shutting down: hand the task back unspent.
		return store.Outcome{Err: "interrupted by a service shutdown", RetryAfter: time.Millisecond}
	case o.Err != "" && !time.Now().Before(l.Hard):
		return store.Outcome{Err: "hard time limit exceeded: " + o.Err}
	case o.Err != "" && !time.Now().Before(soft):
		return store.Outcome{Err: "soft time limit exceeded: " + o.Err}
	}
	return o
}

func (r *Runner) call(ctx context.Context, a Args) store.Outcome {
	req, err := http.NewRequestWithContext(ctx, a.Method, a.URL, strings.NewReader(a.Body))
	if err != nil {
		return store.Outcome{Err: err.Error(), NoRetry: true}
	}
	for k, v := range a.Headers {
		req.Header.Set(k, v)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "hookyard-jobs")
	}
	trace.InjectHTTP(ctx, req.Header)
	resp, err := r.client.Do(req)
	if err != nil {
		var blocked *ssrf.BlockedError
		if errors.As(err, &blocked) {
			return store.Outcome{Err: err.Error(), NoRetry: true}
		}
		return store.Outcome{Err: err.Error()}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		return store.Outcome{Err: fmt.Sprintf("HTTP %d, reading the body: %v", resp.StatusCode, err)}
	}
	text := string(body)
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		snippet := text
		if len(snippet) > 256 {
			snippet = strings.ToValidUTF8(snippet[:256], "")
		}
		return store.Outcome{Err: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, snippet)}
	}
	res, _ := json.Marshal(Result{Status: resp.StatusCode, Body: text})
	return store.Outcome{Result: res}
}
