package source

import (
	"context"
	"sort"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/tally"
)

// Counters of a source's webhooks, kept per tenant in the hash StatsKey
// (package tally) by the receiver and read by ListSourceStats.
const (
	CountReceived            = "received"
	CountAccepted            = "accepted"
	CountDuplicate           = "duplicate"
	CountVerificationFailure = "verification_failure"
	CountOtherRejected       = "other_rejected"
)

// StatsKey is the hash of the tenant's webhook counters.
func (s *Store) StatsKey(tenant string) string { return s.prefix + ":stats:{" + tenant + "}" }

// Stats returns the tenant's webhook counters per source, by name.
func (s *Store) Stats(ctx context.Context, tenant string) ([]*ingressv1.SourceStats, error) {
	counts, err := tally.Read(ctx, s.rdb, s.StatsKey(tenant))
	if err != nil {
		return nil, err
	}
	out := make([]*ingressv1.SourceStats, 0, len(counts))
	for name, c := range counts {
		out = append(out, &ingressv1.SourceStats{
			Source: name, ReceivedCount: c[CountReceived], AcceptedCount: c[CountAccepted],
			DuplicateCount: c[CountDuplicate], VerificationFailureCount: c[CountVerificationFailure],
			OtherRejectedCount: c[CountOtherRejected],
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out, nil
}
