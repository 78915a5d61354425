package namespace

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/platform/topic"
)

// Strategies.
const (
	CacheAside   = "cache_aside"
	ReadThrough  = "read_through"
	WriteThrough = "write_through"
	WriteBehind  = "write_behind"
)

// Defaults and limits of a namespace's settings.
const (
	DefaultTTL         = 5 * time.Minute
	DefaultTimeout     = 5 * time.Second
	MaxTimeout         = 60 * time.Second
	DefaultNegativeTTL = 30 * time.Second
	DefaultMaxValue    = 1 << 20
	MaxValue           = 4 << 20
	MaxTTL             = 30 * 24 * time.Hour
	MaxRules           = 50
	MaxTemplates       = 20
	MaxHeaders         = 32
	MaxKeyBytes        = 512
	MaxNearBytes       = 1 << 30
)

// ValidName reports whether name can name a namespace.
func ValidName(name string) bool {
	if name == "" || len(name) > 63 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// ValidKey checks a cache key.
func ValidKey(key string) error {
	switch {
	case key == "":
		return errors.New("key: required")
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("key: longer than %d bytes", MaxKeyBytes)
	case strings.ContainsAny(key, "\x00\n\r"):
		return errors.New("key: must not contain NUL, CR or LF")
	}
	return nil
}

// Normalize fills defaults that follow from other fields (strategy from the
// deprecated mode) so stored namespaces are explicit.
func Normalize(ns *cachev1.Namespace) {
	if ns.Strategy == "" {
		//nolint:staticcheck // reading the deprecated field is its whole point
		ns.Strategy = ns.GetMode()
	}
	if ns.Strategy == "" {
		ns.Strategy = ReadThrough
	}
	//nolint:staticcheck
	ns.Mode = ""
	ns.WriteMethod = strings.ToUpper(ns.WriteMethod)
}

// Validate checks a namespace after Normalize; policy checks origin URLs
// that are literal addresses (the dial-time check catches the rest).
func Validate(ns *cachev1.Namespace, policy ssrf.Policy) error {
	if !ValidName(ns.GetName()) {
		return fmt.Errorf("name %q: use 1 to 63 letters, digits, '-', '_' or '.'", ns.GetName())
	}
	switch ns.GetStrategy() {
	case CacheAside, ReadThrough, WriteThrough, WriteBehind:
	default:
		return fmt.Errorf("strategy %q: use cache_aside, read_through, write_through or write_behind", ns.GetStrategy())
	}
	if ns.GetStrategy() != CacheAside && ns.GetOriginUrl() == "" {
		return fmt.Errorf("origin_url: required by strategy %s", ns.GetStrategy())
	}
	if ns.GetOriginUrl() != "" {
		if err := checkTemplate("origin_url", ns.GetOriginUrl(), policy); err != nil {
			return err
		}
	}
	if ns.GetWriteUrl() != "" {
		if err := checkTemplate("write_url", ns.GetWriteUrl(), policy); err != nil {
			return err
		}
	}
	switch ns.GetWriteMethod() {
	case "", http.MethodPut, http.MethodPost, http.MethodPatch:
	default:
		return fmt.Errorf("write_method %q: use PUT, POST or PATCH", ns.GetWriteMethod())
	}
	if len(ns.GetHeaders()) > MaxHeaders {
		return fmt.Errorf("headers: at most %d", MaxHeaders)
	}
	for k, v := range ns.GetHeaders() {
		if k == "" || strings.ContainsAny(k, " :\r\n\t") || strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("headers: %q is not a valid HTTP header", k)
		}
		if strings.EqualFold(k, "Host") || strings.EqualFold(k, "Content-Length") {
			return fmt.Errorf("headers: %q cannot be set", k)
		}
	}
	ttl := TTL(ns)
	if ns.Ttl != nil && (ttl <= 0 || ttl > MaxTTL) {
		return fmt.Errorf("ttl: must be positive and at most %s", MaxTTL)
	}
	if err := ns.GetTtl().CheckValid(); ns.Ttl != nil && err != nil {
		return fmt.Errorf("ttl: %w", err)
	}
	if j := ns.GetTtlJitter().AsDuration(); j < 0 || (j > 0 && j >= ttl) {
		return fmt.Errorf("ttl_jitter: must be at least 0 and less than ttl (%s)", ttl)
	}
	if n := ns.GetNegativeTtl().AsDuration(); n < 0 || n > MaxTTL {
		return fmt.Errorf("negative_ttl: must be between 0s and %s", MaxTTL)
	}
	if s := ns.GetStaleWhileRevalidate().AsDuration(); s < 0 || s > MaxTTL {
		return fmt.Errorf("stale_while_revalidate: must be between 0s and %s", MaxTTL)
	}
	if t := ns.GetTimeout().AsDuration(); ns.Timeout != nil && (t <= 0 || t > MaxTimeout) {
		return fmt.Errorf("timeout: must be positive and at most %s", MaxTimeout)
	}
	if m := ns.GetMaxValueBytes(); m < 0 || m > MaxValue {
		return fmt.Errorf("max_value_bytes: must be between 0 (default %d) and %d", DefaultMaxValue, MaxValue)
	}
	if nc := ns.GetNearCache(); nc != nil {
		if nc.GetMaxEntries() < 1 || nc.GetMaxEntries() > 100_000 {
			return fmt.Errorf("near_cache.max_entries: must be between 1 and 100000")
		}
		if b := nc.GetMaxBytes(); b < 0 || b > MaxNearBytes {
			return fmt.Errorf("near_cache.max_bytes: must be between 0 (default 16 MiB) and %d", int64(MaxNearBytes))
		}
		// The near cache's expiry sweeps at ttl/100; below a second the
		// sweeps cost more than the copies save (and below 100ns the
		// interval is zero, which panics in the LRU library).
		if t := nc.GetTtl().AsDuration(); nc.Ttl != nil && (t < time.Second || t > time.Minute) {
			return fmt.Errorf("near_cache.ttl: must be between 1s and 1m")
		}
	}
	if b := ns.GetEarlyRefreshBeta(); b < 0 || b > 10 {
		return fmt.Errorf("early_refresh_beta: must be between 0 and 10")
	}
	for _, p := range ns.GetInvalidateOn() {
		if err := topic.Validate(p); err != nil {
			return fmt.Errorf("invalidate_on: %w", err)
		}
	}
	if len(ns.GetInvalidationRules()) > MaxRules {
		return fmt.Errorf("invalidation_rules: at most %d", MaxRules)
	}
	for i, r := range ns.GetInvalidationRules() {
		if err := topic.Validate(r.GetEventType()); err != nil {
			return fmt.Errorf("invalidation_rules[%d].event_type: %w", i, err)
		}
		n := len(r.GetKeys()) + len(r.GetTags()) + len(r.GetPrefixes())
		if n == 0 {
			return fmt.Errorf("invalidation_rules[%d]: name at least one of keys, tags or prefixes", i)
		}
		if n > MaxTemplates {
			return fmt.Errorf("invalidation_rules[%d]: at most %d templates", i, MaxTemplates)
		}
		for _, list := range [][]string{r.GetKeys(), r.GetTags(), r.GetPrefixes()} {
			for _, tmpl := range list {
				if _, err := ParseTemplate(tmpl); err != nil {
					return fmt.Errorf("invalidation_rules[%d]: %w", i, err)
				}
			}
		}
	}
	return nil
}

func checkTemplate(field, tmpl string, policy ssrf.Policy) error {
	if !strings.Contains(tmpl, "{key}") {
		return fmt.Errorf("%s %q must contain {key}", field, tmpl)
	}
	if err := policy.ValidateURL(strings.ReplaceAll(tmpl, "{key}", "k")); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

// TTL is the namespace's value TTL.
func TTL(ns *cachev1.Namespace) time.Duration {
	if ns.Ttl == nil {
		return DefaultTTL
	}
	return ns.GetTtl().AsDuration()
}

// NegativeTTL is how long an origin 404 is remembered.
func NegativeTTL(ns *cachev1.Namespace) time.Duration {
	if ns.NegativeTtl == nil {
		return DefaultNegativeTTL
	}
	return ns.GetNegativeTtl().AsDuration()
}

// Timeout is the origin request timeout.
func Timeout(ns *cachev1.Namespace) time.Duration {
	if ns.Timeout == nil {
		return DefaultTimeout
	}
	return ns.GetTimeout().AsDuration()
}

// MaxValueBytes is the largest value stored.
func MaxValueBytes(ns *cachev1.Namespace) int64 {
	if ns.GetMaxValueBytes() == 0 {
		return DefaultMaxValue
	}
	return ns.GetMaxValueBytes()
}

// WriteURL is the URL template of origin writes.
func WriteURL(ns *cachev1.Namespace) string {
	if ns.GetWriteUrl() != "" {
		return ns.GetWriteUrl()
	}
	return ns.GetOriginUrl()
}

// WriteMethod is the method of origin writes.
func WriteMethod(ns *cachev1.Namespace) string {
	if ns.GetWriteMethod() != "" {
		return ns.GetWriteMethod()
	}
	return http.MethodPut
}
