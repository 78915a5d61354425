// Package patch applies an update mask (AIP-134) to a resource, the same
// way in every service: sources, endpoints and namespaces.
package patch

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Rules say what an update of one resource may change. Field names are
// proto names ("max_in_flight").
type Rules struct {
	// Kind names the resource in errors ("source").
	Kind string
	// Identity fields ("name", "id") cannot change: naming one with
	// another value than the current one is an error.
	Identity []string
	// OutputOnly fields cannot be named in a mask; without a mask they
	// are ignored, so a resource read and sent back is a valid update.
	OutputOnly []string
	// Updatable, when set, lists the only other fields a mask may name;
	// without a mask the others are ignored.
	Updatable []string
	// Nested lists message fields whose nested paths ("hmac.prefix")
	// change that nested field alone. Elsewhere a nested path, such as
	// the "headers.X-Key" grpc-gateway derives from a PATCH body without
	// a mask, replaces its whole top-level field.
	Nested []string
	// Also names fields that change along with another: expiry times
	// that belong to the positions of a list of secrets.
	Also map[string][]string
}

// Apply returns a copy of cur with the fields named by paths taken from
// in. Paths are proto or JSON names. With no paths, every field set in in
// is taken (a PATCH without a mask). A field named but not set in in is
// cleared. Errors are the caller's fault and name the path.
func Apply[M proto.Message](cur, in M, paths []string, r Rules) (M, error) {
	out := proto.Clone(cur).(M)
	src, dst := in.ProtoReflect(), out.ProtoReflect()
	fields := dst.Descriptor().Fields()
	explicit := len(paths) > 0
	if !explicit {
		src.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			paths = append(paths, string(fd.Name()))
			return true
		})
	}
	done := map[protoreflect.Name]bool{}
	var zero M
	for _, p := range paths {
		top, sub, nested := strings.Cut(p, ".")
		fd := fields.ByName(protoreflect.Name(top))
		if fd == nil {
			fd = fields.ByJSONName(top)
		}
		if fd == nil {
			return zero, fmt.Errorf("update_mask: unknown field %q", p)
		}
		name := string(fd.Name())
		switch {
		case slices.Contains(r.Identity, name):
			if !proto.Equal(valueMessage(src, fd), valueMessage(dst, fd)) && src.Has(fd) {
				return zero, fmt.Errorf("%s cannot be changed; create a new %s", name, r.Kind)
			}
			continue
		case slices.Contains(r.OutputOnly, name):
			if explicit {
				return zero, fmt.Errorf("update_mask: %s is output only", name)
			}
			continue
		case r.Updatable != nil && !slices.Contains(r.Updatable, name):
			if explicit {
				return zero, fmt.Errorf("update_mask: field %q cannot be updated (updatable: %s)", p, strings.Join(r.Updatable, ", "))
			}
			continue
		}
		if nested && slices.Contains(r.Nested, name) && fd.Message() != nil {
			if err := applyNested(src, dst, fd, sub, p); err != nil {
				return zero, err
			}
			continue
		}
		for _, f := range append([]protoreflect.FieldDescriptor{fd}, also(fields, r.Also[name])...) {
			if done[f.Name()] {
				continue
			}
			done[f.Name()] = true
			copyField(src, dst, f)
		}
	}
	// A copy, so that the result shares no list or map with in.
	return proto.Clone(out).(M), nil
}

func also(fields protoreflect.FieldDescriptors, names []string) []protoreflect.FieldDescriptor {
	var out []protoreflect.FieldDescriptor
	for _, n := range names {
		if fd := fields.ByName(protoreflect.Name(n)); fd != nil {
			out = append(out, fd)
		}
	}
	return out
}

func copyField(src, dst protoreflect.Message, fd protoreflect.FieldDescriptor) {
	if src.Has(fd) {
		dst.Set(fd, src.Get(fd))
	} else {
		dst.Clear(fd)
	}
}

// applyNested copies one field of the message field fd.
func applyNested(src, dst protoreflect.Message, fd protoreflect.FieldDescriptor, sub, path string) error {
	inner := dst.Mutable(fd).Message()
	nf := inner.Descriptor().Fields()
	f := nf.ByName(protoreflect.Name(sub))
	if f == nil {
		f = nf.ByJSONName(sub)
	}
	if f == nil {
		return fmt.Errorf("update_mask: unknown field %q", path)
	}
	copyField(src.Get(fd).Message(), inner, f)
	return nil
}

// valueMessage wraps a field's value so that values of any kind compare
// with proto.Equal.
func valueMessage(m protoreflect.Message, fd protoreflect.FieldDescriptor) proto.Message {
	c := m.Type().New()
	if m.Has(fd) {
		c.Set(fd, m.Get(fd))
	}
	return c.Interface()
}
