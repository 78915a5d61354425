// Package api implements the cache's gRPC service (and, through the
// gateway, its REST routes). Every call is scoped to the caller's tenant;
// domain errors become gRPC status codes here.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/platform/tally"
	"github.com/hookyard/hookyard/services/cache/internal/entries"
	"github.com/hookyard/hookyard/services/cache/internal/fill"
	"github.com/hookyard/hookyard/services/cache/internal/metrics"
	"github.com/hookyard/hookyard/services/cache/internal/namespace"
	"github.com/hookyard/hookyard/services/cache/internal/origin"
	"github.com/hookyard/hookyard/services/cache/internal/writebehind"
)

// Cache implements CacheService.
type Cache struct {
	cachev1.UnimplementedCacheServiceServer
	Namespaces *namespace.Store
	Entries    *entries.Store
	Reader     *fill.Reader
	Origin     *origin.Client
	Writes     *writebehind.Queue
	Policy     ssrf.Policy
	Metrics    *metrics.Metrics
	Log        *slog.Logger
	// Stats, when set, counts each namespace's hits and misses for
	// ListNamespaceStats.
	Stats *tally.Tally
}

// domain is the ErrorInfo domain of the service's errors.
const domain = "hookyard.cache.v1"

// Limits of the key API.
const (
	MaxBatch = 100
	MaxTags  = 32
	MaxItems = 1000
)

func nsError(err error, name string) error {
	switch {
	case errors.Is(err, namespace.ErrNotFound):
		return status.Errorf(codes.NotFound, "namespace %q not found", name)
	case errors.Is(err, namespace.ErrExists):
		return status.Errorf(codes.AlreadyExists, "namespace %q exists", name)
	case errors.Is(err, namespace.ErrBadToken):
		return server.InvalidArgument(domain, "page_token", "invalid; pass the next_page_token of a previous call")
	case errors.Is(err, namespace.ErrConflict):
		return status.Errorf(codes.Aborted, "namespace %q: %v", name, err)
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return server.Unavailable(domain, "the namespace store", err)
}

// CreateNamespace creates a namespace.
func (c *Cache) CreateNamespace(ctx context.Context, r *cachev1.CreateNamespaceRequest) (*cachev1.Namespace, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if r.GetNamespace() == nil {
		return nil, server.InvalidArgument(domain, "namespace", "required")
	}
	ns := proto.Clone(r.GetNamespace()).(*cachev1.Namespace)
	ns.CreateTime, ns.UpdateTime, ns.Uid = nil, nil, ""
	namespace.Normalize(ns)
	if err := namespace.Validate(ns, c.Policy); err != nil {
		return nil, server.BadRequest(domain, err)
	}
	rec, err := c.Namespaces.Create(ctx, tenant, ns)
	if err != nil {
		return nil, nsError(err, ns.GetName())
	}
	return namespace.View(rec), nil
}

// GetNamespace returns a namespace.
func (c *Cache) GetNamespace(ctx context.Context, r *cachev1.GetNamespaceRequest) (*cachev1.Namespace, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !namespace.ValidName(r.GetName()) {
		return nil, status.Errorf(codes.NotFound, "namespace %q not found", r.GetName())
	}
	rec, err := c.Namespaces.Get(ctx, tenant, r.GetName())
	if err != nil {
		return nil, nsError(err, r.GetName())
	}
	return namespace.View(rec), nil
}

// ListNamespaces pages through the tenant's namespaces by name.
func (c *Cache) ListNamespaces(ctx context.Context, r *cachev1.ListNamespacesRequest) (*cachev1.ListNamespacesResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	size, err := server.PageSize(r.GetPageSize())
	if err != nil {
		return nil, err
	}
	recs, next, err := c.Namespaces.List(ctx, tenant, size, r.GetPageToken())
	if err != nil {
		return nil, nsError(err, "")
	}
	resp := &cachev1.ListNamespacesResponse{NextPageToken: next}
	for _, rec := range recs {
		resp.Namespaces = append(resp.Namespaces, namespace.View(rec))
	}
	return resp, nil
}

// UpdateNamespace changes the fields in update_mask (all set fields when
// there is none). New settings reach every replica within a second.
func (c *Cache) UpdateNamespace(ctx context.Context, r *cachev1.UpdateNamespaceRequest) (*cachev1.Namespace, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	in := r.GetNamespace()
	if in == nil {
		return nil, server.InvalidArgument(domain, "namespace", "required")
	}
	if !namespace.ValidName(in.GetName()) {
		return nil, status.Errorf(codes.NotFound, "namespace %q not found", in.GetName())
	}
	rec, err := c.Namespaces.Modify(ctx, tenant, in.GetName(), func(cur *cachev1.Namespace) (*cachev1.Namespace, error) {
		merged, err := namespace.Merge(cur, in, r.GetUpdateMask().GetPaths())
		if err != nil {
			return nil, server.BadRequest(domain, err)
		}
		if err := namespace.Unmask(merged, cur); err != nil {
			return nil, server.BadRequest(domain, err)
		}
		namespace.Normalize(merged)
		if err := namespace.Validate(merged, c.Policy); err != nil {
			return nil, server.BadRequest(domain, err)
		}
		return merged, nil
	})
	if err != nil {
		return nil, nsError(err, in.GetName())
	}
	return namespace.View(rec), nil
}

// DeleteNamespace deletes a namespace; its values go with it.
func (c *Cache) DeleteNamespace(ctx context.Context, r *cachev1.DeleteNamespaceRequest) (*cachev1.DeleteNamespaceResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !namespace.ValidName(r.GetName()) {
		return nil, status.Errorf(codes.NotFound, "namespace %q not found", r.GetName())
	}
	rec, err := c.Namespaces.Delete(ctx, tenant, r.GetName())
	if err != nil {
		return nil, nsError(err, r.GetName())
	}
	// A replica may still use its copy of the namespace for up to a
	// second; retiring the epoch makes whatever it reads a miss.
	keep := namespace.TTL(rec.NS) + rec.NS.GetTtlJitter().AsDuration() + rec.NS.GetStaleWhileRevalidate().AsDuration() + namespace.NegativeTTL(rec.NS) + time.Minute
	if err := c.Entries.Retire(ctx, c.Entries.NS(rec.ID), keep); err != nil {
		c.Log.WarnContext(ctx, "deleted namespace: retiring its values failed; they expire with their TTL", "namespace", r.GetName(), "err", err)
	}
	c.Metrics.Invalidations.WithLabelValues("delete").Inc()
	return &cachev1.DeleteNamespaceResponse{}, nil
}

// lookup resolves the namespace of a key call.
func (c *Cache) lookup(ctx context.Context, name string) (*namespace.Record, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	if !namespace.ValidName(name) {
		return nil, status.Errorf(codes.NotFound, "namespace %q not found", name)
	}
	rec, err := c.Namespaces.Lookup(ctx, tenant, name)
	if err != nil {
		return nil, nsError(err, name)
	}
	return rec, nil
}

func keyError(key string) error {
	if err := namespace.ValidKey(key); err != nil {
		return server.BadRequest(domain, err)
	}
	return nil
}

func readError(err error) error {
	var nf *fill.ErrNotFound
	var un *fill.ErrUnavailable
	switch {
	case errors.As(err, &nf):
		return status.Error(codes.NotFound, nf.Reason)
	case errors.As(err, &un) && un.Store != nil:
		return storeError(un.Store)
	case errors.As(err, &un):
		return server.UnavailableBecause(domain, un.Why, un.Reason, nil)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return storeError(err)
}

// storeError is the error for a failed Redis call: the caller is told the
// cache store is unavailable and when to retry, the log gets the cause.
func storeError(err error) error { return server.Unavailable(domain, "the cache store", err) }

func toEntry(key string, res fill.Result) *cachev1.Entry {
	e := res.Entry
	out := &cachev1.Entry{
		Key: key, Value: e.Value, Hit: res.Hit, Stale: res.Stale, Tags: e.Tags,
		ExpireTime: timestamppb.New(e.Fresh),
	}
	if !res.Now.IsZero() && !e.Stored.IsZero() {
		out.Age = durationpb.New(max(res.Now.Sub(e.Stored), 0))
	}
	return out
}

// GetKey reads a key, filling a miss from the origin.
func (c *Cache) GetKey(ctx context.Context, r *cachev1.GetKeyRequest) (*cachev1.Entry, error) {
	rec, err := c.lookup(ctx, r.GetNs())
	if err != nil {
		return nil, err
	}
	if err := keyError(r.GetKey()); err != nil {
		return nil, err
	}
	res, err := c.Reader.Get(ctx, rec, r.GetKey())
	if err != nil {
		return nil, readError(err)
	}
	c.count(rec, res.Hit, 1)
	return toEntry(r.GetKey(), res), nil
}

// count adds n reads of the namespace that hit or missed, if counting.
func (c *Cache) count(rec *namespace.Record, hit bool, n int64) {
	if c.Stats == nil || n == 0 {
		return
	}
	counter := namespace.CountMiss
	if hit {
		counter = namespace.CountHit
	}
	c.Stats.Add(c.Namespaces.StatsKey(rec.Tenant), rec.NS.GetName(), counter, n)
}

// ListNamespaceStats reports the tenant's read counters per namespace.
func (c *Cache) ListNamespaceStats(ctx context.Context, _ *cachev1.ListNamespaceStatsRequest) (*cachev1.ListNamespaceStatsResponse, error) {
	tenant, err := auth.MustTenant(ctx)
	if err != nil {
		return nil, err
	}
	stats, err := c.Namespaces.Stats(ctx, tenant)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read counters: %v", err)
	}
	return &cachev1.ListNamespaceStatsResponse{Stats: stats}, nil
}

// BatchGetKeys reads several keys; each succeeds or fails on its own.
func (c *Cache) BatchGetKeys(ctx context.Context, r *cachev1.BatchGetKeysRequest) (*cachev1.BatchGetKeysResponse, error) {
	rec, err := c.lookup(ctx, r.GetNs())
	if err != nil {
		return nil, err
	}
	if len(r.GetKeys()) == 0 || len(r.GetKeys()) > MaxBatch {
		return nil, server.InvalidArgument(domain, "keys", fmt.Sprintf("give 1 to %d keys", MaxBatch))
	}
	for _, k := range r.GetKeys() {
		if err := keyError(k); err != nil {
			return nil, err
		}
	}
	out := make([]*cachev1.KeyResult, len(r.GetKeys()))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, k := range r.GetKeys() {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := c.Reader.Get(ctx, rec, k)
			kr := &cachev1.KeyResult{Key: k}
			if err != nil {
				st := status.Convert(readError(err))
				kr.ErrorCode, kr.ErrorMessage = codeName(st.Code()), st.Message()
			} else {
				kr.Entry = toEntry(k, res)
			}
			out[i] = kr
		}()
	}
	wg.Wait()
	var hits, misses int64
	for _, kr := range out {
		switch {
		case kr.GetEntry().GetHit():
			hits++
		case kr.GetEntry() != nil:
			misses++
		}
	}
	c.count(rec, true, hits)
	c.count(rec, false, misses)
	return &cachev1.BatchGetKeysResponse{Results: out}, nil
}

// codeName spells a code as the gRPC documentation does ("NOT_FOUND").
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// PutKey writes a key: to the origin first in a write-through namespace,
// to the origin later in a write-behind one, to the cache only otherwise.
func (c *Cache) PutKey(ctx context.Context, r *cachev1.PutKeyRequest) (*cachev1.Entry, error) {
	rec, err := c.lookup(ctx, r.GetNs())
	if err != nil {
		return nil, err
	}
	if err := keyError(r.GetKey()); err != nil {
		return nil, err
	}
	e := r.GetEntry()
	if e == nil {
		return nil, server.InvalidArgument(domain, "entry", "required")
	}
	if e.GetKey() != "" && e.GetKey() != r.GetKey() {
		return nil, server.InvalidArgument(domain, "entry.key", fmt.Sprintf("%q differs from the key in the path %q", e.GetKey(), r.GetKey()))
	}
	if limit := namespace.MaxValueBytes(rec.NS); int64(len(e.GetValue())) > limit {
		return nil, server.InvalidArgument(domain, "entry.value", fmt.Sprintf("%d bytes exceed the namespace's max_value_bytes %d", len(e.GetValue()), limit))
	}
	if len(e.GetTags()) > MaxTags {
		return nil, server.InvalidArgument(domain, "entry.tags", fmt.Sprintf("at most %d", MaxTags))
	}
	for _, t := range e.GetTags() {
		if err := namespace.ValidKey(t); err != nil {
			return nil, server.InvalidArgument(domain, "entry.tags", fmt.Sprintf("%q: %v", t, err))
		}
	}
	ttl := fill.TTLFor(rec)
	if e.Ttl != nil {
		if err := e.GetTtl().CheckValid(); err != nil || e.GetTtl().AsDuration() <= 0 || e.GetTtl().AsDuration() > namespace.MaxTTL {
			return nil, server.InvalidArgument(domain, "entry.ttl", fmt.Sprintf("must be positive and at most %s", namespace.MaxTTL))
		}
		ttl = e.GetTtl().AsDuration()
	}
	v := entries.Value{Bytes: e.GetValue(), TTL: ttl, Keep: ttl + rec.NS.GetStaleWhileRevalidate().AsDuration(), Tags: e.GetTags()}
	n := c.Entries.NS(rec.ID)
	switch rec.NS.GetStrategy() {
	case namespace.WriteThrough:
		// Overlapping writes to one key may reach the origin in another
		// order than the cache; the write is counted in first, and the
		// cache keeps its value only if no other write overlapped it.
		w, err := c.Entries.BeginWrite(ctx, n, r.GetKey(), namespace.Timeout(rec.NS)+5*time.Second)
		if err != nil {
			return nil, storeError(err)
		}
		if err := c.Origin.Write(ctx, rec.NS, r.GetKey(), e.GetValue()); err != nil {
			if eerr := c.Entries.EndWrite(context.WithoutCancel(ctx), n, w); eerr != nil {
				c.Log.WarnContext(ctx, "write-through: ending a failed write", "key", r.GetKey(), "err", eerr)
			}
			c.Metrics.Origin.WithLabelValues("write", "error").Inc()
			var oe *origin.Error
			if errors.As(err, &oe) && oe.Status >= 400 && oe.Status < 500 {
				return nil, status.Errorf(codes.FailedPrecondition, "origin refused the write; cache unchanged: %v", err)
			}
			return nil, server.UnavailableBecause(domain, fill.WhyOrigin, fmt.Sprintf("origin write failed; cache unchanged: %v", err), nil)
		}
		c.Metrics.Origin.WithLabelValues("write", "ok").Inc()
		if err := c.Entries.SetWritten(ctx, n, w, v); errors.Is(err, entries.ErrOverlapped) {
			c.Log.DebugContext(ctx, "write-through: overlapping writes; the key was invalidated", "key", r.GetKey())
		} else if err != nil {
			// The origin has the new value; make sure the cache does not
			// keep serving the old one.
			if _, ierr := c.Entries.Invalidate(context.WithoutCancel(ctx), n, r.GetKey()); ierr != nil {
				c.Log.ErrorContext(ctx, "write-through: origin written but the cache could not be updated or invalidated", "key", r.GetKey(), "err", ierr)
			}
			return nil, server.Unavailable(domain, "the cache store (the origin has the new value)", err)
		}
	case namespace.WriteBehind:
		if err := c.Writes.Write(ctx, rec, r.GetKey(), v); err != nil {
			return nil, server.Unavailable(domain, "the write-behind queue", err)
		}
	default:
		if err := c.Entries.Set(ctx, n, r.GetKey(), v); err != nil {
			return nil, storeError(err)
		}
	}
	return &cachev1.Entry{
		Key: r.GetKey(), Value: e.GetValue(), Tags: e.GetTags(),
		ExpireTime: timestamppb.New(time.Now().Add(ttl)), Age: durationpb.New(0),
	}, nil
}

// DeleteKey removes a key from the cache (not from the origin).
func (c *Cache) DeleteKey(ctx context.Context, r *cachev1.DeleteKeyRequest) (*cachev1.DeleteKeyResponse, error) {
	rec, err := c.lookup(ctx, r.GetNs())
	if err != nil {
		return nil, err
	}
	if err := keyError(r.GetKey()); err != nil {
		return nil, err
	}
	if _, err := c.Entries.Invalidate(ctx, c.Entries.NS(rec.ID), r.GetKey()); err != nil {
		return nil, storeError(err)
	}
	c.Metrics.Invalidations.WithLabelValues("key").Inc()
	return &cachev1.DeleteKeyResponse{}, nil
}

// InvalidateNamespace invalidates by key, tag, prefix, pattern or all.
// When it returns, no read started afterwards sees a value from before.
func (c *Cache) InvalidateNamespace(ctx context.Context, r *cachev1.InvalidateNamespaceRequest) (*cachev1.InvalidateNamespaceResponse, error) {
	rec, err := c.lookup(ctx, r.GetNs())
	if err != nil {
		return nil, err
	}
	all := r.GetAll()
	prefixes := append([]string(nil), r.GetPrefixes()...)
	for _, p := range r.GetPatterns() {
		switch {
		case p == "*":
			all = true
		case strings.HasSuffix(p, "*") && !strings.ContainsAny(p[:len(p)-1], "*?[]\\"):
			prefixes = append(prefixes, p[:len(p)-1])
		default:
			return nil, server.InvalidArgument(domain, "patterns", fmt.Sprintf("%q: only \"*\" and \"prefix*\" are supported", p))
		}
	}
	if !all && len(r.GetKeys())+len(r.GetTags())+len(prefixes) == 0 {
		return nil, server.InvalidArgument(domain, "keys", "name keys, tags, prefixes, patterns or all")
	}
	if len(r.GetKeys())+len(r.GetTags())+len(prefixes) > MaxItems {
		return nil, server.InvalidArgument(domain, "keys", fmt.Sprintf("at most %d keys, tags and prefixes in one call", MaxItems))
	}
	for _, k := range r.GetKeys() {
		if err := keyError(k); err != nil {
			return nil, err
		}
	}
	for _, t := range append(append([]string(nil), r.GetTags()...), prefixes...) {
		if err := namespace.ValidKey(t); err != nil {
			return nil, server.InvalidArgument(domain, "tags", fmt.Sprintf("%q: %v", t, err))
		}
	}
	n := c.Entries.NS(rec.ID)
	var total int64
	fail := storeError
	if all {
		if err := c.Entries.InvalidateAll(ctx, n); err != nil {
			return nil, fail(err)
		}
		c.Metrics.Invalidations.WithLabelValues("all").Inc()
	}
	if len(r.GetKeys()) > 0 {
		k, err := c.Entries.Invalidate(ctx, n, r.GetKeys()...)
		if err != nil {
			return nil, fail(err)
		}
		total += k
		c.Metrics.Invalidations.WithLabelValues("key").Add(float64(len(r.GetKeys())))
	}
	for _, t := range r.GetTags() {
		k, err := c.Entries.InvalidateTag(ctx, n, t)
		if err != nil {
			return nil, fail(err)
		}
		total += k
		c.Metrics.Invalidations.WithLabelValues("tag").Inc()
	}
	for _, p := range prefixes {
		k, err := c.Entries.InvalidatePrefix(ctx, n, p)
		if err != nil {
			return nil, fail(err)
		}
		total += k
		c.Metrics.Invalidations.WithLabelValues("prefix").Inc()
	}
	return &cachev1.InvalidateNamespaceResponse{Invalidated: total}, nil
}

// ListPendingWrites lists a write-behind namespace's backlog.
func (c *Cache) ListPendingWrites(ctx context.Context, r *cachev1.ListPendingWritesRequest) (*cachev1.ListPendingWritesResponse, error) {
	rec, err := c.lookup(ctx, r.GetNs())
	if err != nil {
		return nil, err
	}
	size, err := server.PageSize(r.GetPageSize())
	if err != nil {
		return nil, err
	}
	ps, next, err := c.Writes.ListPending(ctx, rec, size, r.GetPageToken())
	if err != nil {
		return nil, nsError(err, r.GetNs())
	}
	resp := &cachev1.ListPendingWritesResponse{NextPageToken: next}
	for _, p := range ps {
		w := &cachev1.PendingWrite{Key: p.Key, CreateTime: timestamppb.New(p.Since), Attempts: int32(p.Attempts), LastError: p.LastErr}
		if !p.Next.IsZero() {
			w.NextAttemptTime = timestamppb.New(p.Next)
		}
		resp.Writes = append(resp.Writes, w)
	}
	return resp, nil
}
