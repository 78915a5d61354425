package source

import (
	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/patch"
)

// updates are the rules of UpdateSource's mask. Expiry times belong to the
// positions of the secrets, so new secrets come with their own (or none).
var updates = patch.Rules{
	Kind:       "source",
	Identity:   []string{"name"},
	OutputOnly: []string{"create_time", "update_time"},
	Nested:     []string{"hmac"},
	Also:       map[string][]string{"secrets": {"secret_expire_times"}},
}

// Merge applies the fields of in named by paths to cur. With no paths it
// applies every field that is set in in, which is what a PATCH without a
// mask means. Name and the output-only times cannot change.
func Merge(cur, in *ingressv1.Source, paths []string) (*ingressv1.Source, error) {
	return patch.Apply(cur, in, paths, updates)
}
