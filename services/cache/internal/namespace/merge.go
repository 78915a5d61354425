package namespace

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
)

// Merge applies the fields of in named by paths to cur; with no paths,
// every field set in in (a PATCH without a mask). A nested path such as
// "headers.X-Key", which grpc-gateway derives from a PATCH body, replaces
// its whole top-level field. Output-only fields are ignored without a mask
// and refused in one.
func Merge(cur, in *cachev1.Namespace, paths []string) (*cachev1.Namespace, error) {
	out := proto.Clone(cur).(*cachev1.Namespace)
	src, dst := in.ProtoReflect(), out.ProtoReflect()
	fields := src.Descriptor().Fields()
	implicit := len(paths) == 0
	if implicit {
		src.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			paths = append(paths, string(fd.Name()))
			return true
		})
	}
	done := map[protoreflect.Name]bool{}
	for _, p := range paths {
		top, _, _ := strings.Cut(p, ".")
		fd := fields.ByName(protoreflect.Name(top))
		if fd == nil {
			fd = fields.ByJSONName(top)
		}
		if fd == nil {
			return nil, fmt.Errorf("update_mask: unknown field %q", p)
		}
		switch fd.Name() {
		case "name":
			if in.GetName() != cur.GetName() {
				return nil, fmt.Errorf("name: cannot be changed; create a new namespace")
			}
			continue
		case "create_time", "update_time", "uid":
			if implicit {
				// Echoed from a read (read-modify-write): ignored.
				continue
			}
			return nil, fmt.Errorf("%s: output only", fd.Name())
		}
		if done[fd.Name()] {
			continue
		}
		done[fd.Name()] = true
		if src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		} else {
			dst.Clear(fd)
		}
	}
	return out, nil
}
