package namespace

import (
	"context"
	"sort"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/tally"
)

// Counters of a namespace's reads, kept per tenant in the hash StatsKey
// (package tally) by the API and read by ListNamespaceStats.
const (
	CountHit  = "hit"
	CountMiss = "miss"
)

// StatsKey is the hash of the tenant's read counters.
func (s *Store) StatsKey(tenant string) string { return s.prefix + ":stats:{" + tenant + "}" }

// Stats returns the tenant's read counters per namespace, by name.
func (s *Store) Stats(ctx context.Context, tenant string) ([]*cachev1.NamespaceStats, error) {
	counts, err := tally.Read(ctx, s.rdb, s.StatsKey(tenant))
	if err != nil {
		return nil, err
	}
	out := make([]*cachev1.NamespaceStats, 0, len(counts))
	for name, c := range counts {
		st := &cachev1.NamespaceStats{Namespace: name, HitCount: c[CountHit], MissCount: c[CountMiss]}
		if n := st.HitCount + st.MissCount; n > 0 {
			st.HitRatio = float64(st.HitCount) / float64(n)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace < out[j].Namespace })
	return out, nil
}
