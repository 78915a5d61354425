package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/hookyard/hookyard/platform/dedupe"
)

// Source names with a fixed meaning on the bus.
const (
	// OperationalSource is the source of the events Hookyard itself
	// publishes (hookyard.endpoint.disabled). No tenant may publish under
	// it, and no webhook source may take it.
	OperationalSource = "hookyard"
	// DefaultSource is the source of internal events that name none. Every
	// tenant publishes under it, so no webhook source may take it.
	DefaultSource = "app"
)

// ProviderNames are the webhook provider names. A tenant may publish
// internally under one of them only if it owns a webhook source of that
// name: a consumer bound to "stripe.#" expects Stripe's signed events.
var ProviderNames = []string{
	"stripe", "github", "slack", "shopify", "twilio", "standard", "paddle",
	"pagerduty", "square", "sendgrid", "discord", "zoom", "linear",
	"intercom", "mailgun", "hmac",
}

// ReservedForWebhooks reports whether a webhook source may not be named
// name, because internal publishing uses it for every tenant.
func ReservedForWebhooks(name string) bool {
	return name == OperationalSource || name == DefaultSource
}

// Owners answers who owns a webhook source name. The ingress service keeps
// each source as a JSON record {"tenant": ..., "source": {...}} at
// "<prefix>:source:<name>" in the Redis every service shares; Owners reads
// the tenant of that record. Names are global (the receiver URL carries no
// tenant), so a name has at most one owner.
type Owners struct {
	rdb    redis.UniversalClient
	prefix string
}

// SourcesPrefix is the ingress service's key prefix, under which sources
// live.
const SourcesPrefix = "hookyard:ingress"

// NewOwners returns an Owners reading the sources stored under prefix
// (SourcesPrefix in production).
func NewOwners(rdb redis.UniversalClient, prefix string) *Owners {
	return &Owners{rdb: rdb, prefix: prefix}
}

// SourceKey is the Redis key of the webhook source name under prefix.
func SourceKey(prefix, name string) string { return prefix + ":source:" + name }

// Owner returns the tenant owning the webhook source name, or "" if there
// is none.
func (o *Owners) Owner(ctx context.Context, name string) (string, error) {
	b, err := o.rdb.Get(ctx, SourceKey(o.prefix, name)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: read source owner: %w", ErrUnavailable, err)
	}
	return ownerOf(name, b)
}

// ownerOf reads the tenant of the source record b of name.
func ownerOf(name, b string) (string, error) {
	var rec struct {
		Tenant string `json:"tenant"`
	}
	if err := json.Unmarshal([]byte(b), &rec); err != nil || rec.Tenant == "" {
		// A record we cannot read may belong to anyone: refuse rather
		// than let the name be forged.
		return "", fmt.Errorf("%w: source %q has an unreadable record", ErrSourceNotAllowed, name)
	}
	return rec.Tenant, nil
}

// CheckSource reports whether tenant may publish internally under source:
// not OperationalSource, not a name another tenant's webhook source has,
// and not a provider name unless tenant owns a webhook source of that name.
// A nil Owners allows only names that need no lookup to be refused (it
// still refuses OperationalSource and provider names).
func (o *Owners) CheckSource(ctx context.Context, tenant, source string) error {
	check, err := o.sourceCheck(tenant, source)
	if err != nil || check == nil {
		return err
	}
	owner, err := o.Owner(ctx, source)
	if err != nil {
		return err
	}
	return allowed(tenant, source, owner)
}

// sourceCheck is CheckSource as a read to make in the round trip of an
// id's claim: nil when the answer needs no lookup (then err is it).
func (o *Owners) sourceCheck(tenant, source string) (*dedupe.Check, error) {
	switch {
	case source == OperationalSource:
		return nil, fmt.Errorf("%w: source %q is reserved for events Hookyard publishes", ErrSourceNotAllowed, source)
	case source == DefaultSource:
		return nil, nil
	case o == nil:
		return nil, allowed(tenant, source, "")
	}
	return &dedupe.Check{Key: SourceKey(o.prefix, source), Allow: func(record string, found bool) error {
		owner := ""
		if found {
			var err error
			if owner, err = ownerOf(source, record); err != nil {
				return err
			}
		}
		return allowed(tenant, source, owner)
	}}, nil
}

// allowed is CheckSource's answer once the source's owner is known ("":
// none).
func allowed(tenant, source, owner string) error {
	switch {
	case owner == tenant:
		return nil
	case owner != "":
		return fmt.Errorf("%w: source %q is another tenant's webhook source", ErrSourceNotAllowed, source)
	case slices.Contains(ProviderNames, source):
		return fmt.Errorf("%w: source %q is a webhook provider's name; create a webhook source of that name to publish under it", ErrSourceNotAllowed, source)
	}
	return nil
}
