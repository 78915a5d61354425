package endpoint

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/patch"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/services/dispatcher/internal/retry"
)

// Limits on endpoint settings. They keep one tenant's configuration from
// costing the dispatcher unbounded memory or time.
const (
	MaxDescription     = 1024
	MaxEventTypes      = 100
	MaxPatternLength   = 255
	MaxHeaders         = 20
	MaxHeaderValue     = 1024
	MaxRateLimit       = 10000
	MaxMaxInFlight     = 1000
	MinTimeout         = time.Second
	MaxTimeout         = 60 * time.Second
	DefaultMaxInFlight = 10
)

// reservedHeaders are set by the dispatcher; letting an endpoint override
// them would break signatures or HTTP framing.
var reservedHeaders = map[string]bool{
	"webhook-id": true, "webhook-timestamp": true, "webhook-signature": true,
	"content-type": true, "content-length": true, "host": true,
	"transfer-encoding": true, "connection": true, "user-agent": true,
	"te": true, "trailer": true, "upgrade": true, "keep-alive": true,
}

// Validate checks the client-settable fields of ep.
func Validate(ep *dispatcherv1.Endpoint, policy ssrf.Policy) error {
	if ep == nil {
		return errors.New("endpoint is required")
	}
	if err := policy.ValidateURL(ep.GetUrl()); err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if len(ep.GetDescription()) > MaxDescription {
		return fmt.Errorf("description is longer than %d bytes", MaxDescription)
	}
	if err := ValidatePatterns(ep.GetEventTypes()); err != nil {
		return err
	}
	if len(ep.GetHeaders()) > MaxHeaders {
		return fmt.Errorf("headers: %d given, at most %d", len(ep.GetHeaders()), MaxHeaders)
	}
	for name, value := range ep.GetHeaders() {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("headers: %q is not a valid header name", name)
		}
		if reservedHeaders[strings.ToLower(name)] {
			return fmt.Errorf("headers: %q is set by the dispatcher and cannot be overridden", name)
		}
		if len(value) > MaxHeaderValue || !httpguts.ValidHeaderFieldValue(value) {
			return fmt.Errorf("headers: value of %q must be at most %d bytes without control characters", name, MaxHeaderValue)
		}
	}
	if r := ep.GetRateLimit(); r < 0 || r > MaxRateLimit {
		return fmt.Errorf("rate_limit must be 0 (unlimited) to %d requests per second, got %d", MaxRateLimit, r)
	}
	if m := ep.GetMaxInFlight(); m < 0 || m > MaxMaxInFlight {
		return fmt.Errorf("max_in_flight must be 0 (default %d) to %d, got %d", DefaultMaxInFlight, MaxMaxInFlight, m)
	}
	if t := ep.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
		if d := t.AsDuration(); d < MinTimeout || d > MaxTimeout {
			return fmt.Errorf("timeout must be between %s and %s, got %s", MinTimeout, MaxTimeout, d)
		}
	}
	if n := len(ep.GetRetrySchedule()); n > retry.MaxScheduleEntries {
		return fmt.Errorf("retry_schedule has %d entries, at most %d", n, retry.MaxScheduleEntries)
	}
	for i, d := range ep.GetRetrySchedule() {
		if err := d.CheckValid(); err != nil {
			return fmt.Errorf("retry_schedule[%d]: %w", i, err)
		}
		if v := d.AsDuration(); v <= 0 || v > retry.MaxScheduleDelay {
			return fmt.Errorf("retry_schedule[%d] must be positive and at most %s, got %s", i, retry.MaxScheduleDelay, v)
		}
	}
	return nil
}

// ValidatePatterns checks event_types: AMQP topic patterns of non-empty
// dot-separated words.
func ValidatePatterns(patterns []string) error {
	if len(patterns) > MaxEventTypes {
		return fmt.Errorf("event_types: %d given, at most %d", len(patterns), MaxEventTypes)
	}
	for _, p := range patterns {
		if p == "" || len(p) > MaxPatternLength {
			return fmt.Errorf("event_types: pattern %q must be 1-%d bytes", p, MaxPatternLength)
		}
		for w := range strings.SplitSeq(p, ".") {
			if w == "" {
				return fmt.Errorf("event_types: pattern %q has an empty word (leading, trailing or double dot)", p)
			}
			if w != "*" && w != "#" && strings.ContainsAny(w, "*# \t\r\n") {
				return fmt.Errorf("event_types: pattern %q: wildcards must be whole words, like stripe.* or github.#", p)
			}
		}
	}
	return nil
}

// updates are the rules of UpdateEndpoint's mask.
var updates = patch.Rules{
	Kind:     "endpoint",
	Identity: []string{"id"},
	Updatable: []string{"url", "description", "event_types", "headers", "rate_limit", "max_in_flight",
		"timeout", "disabled", "retry_schedule", "retry_client_errors"},
}

// ApplyUpdate copies the fields named by mask from src to dst. An empty
// mask means every field that is set (non-zero) in src.
func ApplyUpdate(dst, src *dispatcherv1.Endpoint, mask *fieldmaskpb.FieldMask) error {
	out, err := patch.Apply(dst, src, mask.GetPaths(), updates)
	if err != nil {
		return err
	}
	proto.Reset(dst)
	proto.Merge(dst, out)
	return nil
}

// Public returns ep as the API shows it: a copy without the secret.
func Public(ep *dispatcherv1.Endpoint) *dispatcherv1.Endpoint {
	out := proto.Clone(ep).(*dispatcherv1.Endpoint)
	out.Secret = ""
	return out
}

// EffectiveTimeout returns the endpoint's request timeout or def.
func EffectiveTimeout(ep *dispatcherv1.Endpoint, def time.Duration) time.Duration {
	if t := ep.GetTimeout(); t != nil && t.AsDuration() > 0 {
		return t.AsDuration()
	}
	return def
}

// EffectiveMaxInFlight returns the endpoint's concurrency limit or def.
func EffectiveMaxInFlight(ep *dispatcherv1.Endpoint, def int) int {
	if m := ep.GetMaxInFlight(); m > 0 {
		return int(m)
	}
	return def
}

// Schedule returns the endpoint's retry schedule or def.
func Schedule(ep *dispatcherv1.Endpoint, def []time.Duration) []time.Duration {
	if len(ep.GetRetrySchedule()) == 0 {
		return def
	}
	out := make([]time.Duration, len(ep.GetRetrySchedule()))
	for i, d := range ep.GetRetrySchedule() {
		out[i] = d.AsDuration()
	}
	return out
}
