package source

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/services/ingress/internal/verify"
)

// Defaults and limits of a source.
const (
	DefaultTolerance    = 5 * time.Minute
	MaxTolerance        = 24 * time.Hour
	DefaultMaxBodyBytes = 1 << 20
	MaxMaxBodyBytes     = 10 << 20
	DefaultDedupeWindow = 72 * time.Hour
	MaxDedupeWindow     = 30 * 24 * time.Hour
	maxSecrets          = 16
	maxSecretLen        = 4096
)

// ValidName reports whether name may name a source: 1-63 of [a-z0-9_-],
// starting with a letter or digit. Dots are excluded because the name is
// the first word of the AMQP routing key. It runs on every webhook, so it
// is a loop rather than a regular expression.
func ValidName(name string) bool {
	if name == "" || len(name) > 63 || name[0] == '_' || name[0] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// Validate checks a source as it would be stored. The errors are meant for
// the API caller.
func Validate(src *ingressv1.Source) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !ValidName(src.GetName()) {
		bad("name %q: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit", src.GetName())
	} else if publish.ReservedForWebhooks(src.GetName()) {
		bad("name %q: reserved for events published through the API", src.GetName())
	} else if slices.Contains(publish.ProviderNames, src.GetName()) && src.GetProvider() != src.GetName() {
		// Consumers bound to "stripe.#" take its events for Stripe's.
		bad("name %q: a provider's name; a source of that name must use provider %q", src.GetName(), src.GetName())
	}
	if !slices.Contains(verify.Providers(), src.GetProvider()) {
		bad("provider %q: must be one of %s", src.GetProvider(), strings.Join(verify.Providers(), ", "))
	}
	if n := len(src.GetSecrets()); n == 0 {
		bad("secrets: at least one secret (or public key) is required")
	} else if n > maxSecrets {
		bad("secrets: at most %d", maxSecrets)
	}
	for i, s := range src.GetSecrets() {
		if strings.TrimSpace(s) == "" || len(s) > maxSecretLen {
			bad("secrets[%d]: must be non-empty and at most %d characters", i, maxSecretLen)
		}
		if strings.HasPrefix(s, "****") {
			bad("secrets[%d]: is a masked value; secrets are write-only, send the secret itself", i)
		}
	}
	if len(src.GetSecretExpireTimes()) > len(src.GetSecrets()) {
		bad("secret_expire_times: more entries than secrets")
	}
	for i, t := range src.GetSecretExpireTimes() {
		if t != nil && t.CheckValid() != nil {
			bad("secret_expire_times[%d]: invalid timestamp", i)
		}
	}
	if d := src.GetTolerance(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() < 0 || d.AsDuration() > MaxTolerance {
			bad("tolerance: must be between 0s (off) and %s", MaxTolerance)
		}
	}
	if u := src.GetPublicUrl(); u != "" {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			bad("public_url %q: must be an absolute http(s) URL", ssrf.RedactURL(u))
		} else if masked(p) {
			bad("public_url: its credentials are the masked value; send the URL with its real credentials")
		}
	} else if p := src.GetProvider(); p == "twilio" || p == "square" {
		bad("public_url: required for %s, which signs the URL it calls", p)
	}
	if n := src.GetMaxBodyBytes(); n < 0 || n > MaxMaxBodyBytes {
		bad("max_body_bytes: must be between 0 (default %d) and %d", DefaultMaxBodyBytes, MaxMaxBodyBytes)
	}
	if d := src.GetDedupeWindow(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() < time.Minute || d.AsDuration() > MaxDedupeWindow {
			bad("dedupe_window: must be between 1m and %s", MaxDedupeWindow)
		}
	}
	if src.GetProvider() == "hmac" && src.GetHmac() == nil {
		bad("hmac: required for provider hmac")
	}
	if len(errs) == 0 {
		// The provider's own checks: key formats, the hmac template.
		if err := VerifyConfig(src).Validate(); err != nil {
			bad("%v", err)
		}
	}
	return errors.Join(errs...)
}

// VerifyConfig is the verifier configuration of src, with every secret.
func VerifyConfig(src *ingressv1.Source) verify.Config {
	c := verify.Config{
		Provider:  src.GetProvider(),
		Tolerance: Tolerance(src),
		PublicURL: src.GetPublicUrl(),
	}
	c.Secrets = src.GetSecrets()
	if h := src.GetHmac(); h != nil {
		c.HMAC = &verify.HMACScheme{
			SignatureHeader: h.GetSignatureHeader(),
			Algorithm:       h.GetAlgorithm(),
			Encoding:        h.GetEncoding(),
			Prefix:          h.GetPrefix(),
			SignedContent:   h.GetSignedContent(),
			TimestampHeader: h.GetTimestampHeader(),
			IDHeader:        h.GetIdHeader(),
			TypeHeader:      h.GetTypeHeader(),
		}
	}
	return c
}

// Compile builds src's verifier; a secret is accepted until its expiry
// time, if it has one.
func Compile(src *ingressv1.Source) (*verify.Verifier, error) {
	var expires []time.Time
	for _, t := range src.GetSecretExpireTimes() {
		var at time.Time
		if t != nil {
			at = t.AsTime()
		}
		expires = append(expires, at)
	}
	return verify.Compile(VerifyConfig(src), expires)
}

// masked reports whether u's credentials are what Masked shows instead of
// them, sent back by a client that read the source.
func masked(u *url.URL) bool {
	if u.User == nil {
		return false
	}
	if pw, ok := u.User.Password(); ok {
		return pw == "xxxxx"
	}
	return u.User.Username() == "xxxxx"
}

// Tolerance is the clock skew src accepts on signed timestamps.
func Tolerance(src *ingressv1.Source) time.Duration {
	if d := src.GetTolerance(); d != nil {
		return d.AsDuration()
	}
	return DefaultTolerance
}

// MaxBody is the body cap of src.
func MaxBody(src *ingressv1.Source) int64 {
	if n := src.GetMaxBodyBytes(); n > 0 {
		return n
	}
	return DefaultMaxBodyBytes
}

// DedupeWindow is how long src's event ids are remembered.
func DedupeWindow(src *ingressv1.Source) time.Duration {
	if d := src.GetDedupeWindow(); d != nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	return DefaultDedupeWindow
}

// Masked returns a copy of src safe to return to a caller: secrets are
// write-only, so only their last four characters are shown, to tell them
// apart during a rotation.
func Masked(src *ingressv1.Source) *ingressv1.Source {
	out := cloneSource(src)
	// Credentials in the URL (Twilio accepts user:password@) are secrets
	// too.
	out.PublicUrl = ssrf.RedactURL(out.GetPublicUrl())
	for i, s := range out.Secrets {
		if len(s) >= 16 {
			out.Secrets[i] = "****" + s[len(s)-4:]
		} else {
			out.Secrets[i] = "****"
		}
	}
	return out
}
