package namespace

import (
	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	"github.com/hookyard/hookyard/platform/patch"
)

var updates = patch.Rules{
	Kind:       "namespace",
	Identity:   []string{"name"},
	OutputOnly: []string{"create_time", "update_time", "uid"},
}

// Merge applies the fields of in named by paths to cur; with no paths,
// every field set in in (a PATCH without a mask). A nested path such as
// "headers.X-Key", which grpc-gateway derives from a PATCH body, replaces
// its whole top-level field.
func Merge(cur, in *cachev1.Namespace, paths []string) (*cachev1.Namespace, error) {
	return patch.Apply(cur, in, paths, updates)
}
