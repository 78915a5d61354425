package source

import (
	"fmt"
	"strings"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Merge applies the fields of in named by paths to cur. With no paths it
// applies every field that is set in in, which is what a PATCH without a
// mask means. Name and the output-only times cannot change.
func Merge(cur, in *ingressv1.Source, paths []string) (*ingressv1.Source, error) {
	out := cloneSource(cur)
	if len(paths) == 0 {
		if in.Provider != "" {
			paths = append(paths, "provider")
		}
		if len(in.Secrets) > 0 {
			paths = append(paths, "secrets")
		}
		if len(in.SecretExpireTimes) > 0 {
			paths = append(paths, "secret_expire_times")
		}
		if in.Tolerance != nil {
			paths = append(paths, "tolerance")
		}
		if in.PublicUrl != "" {
			paths = append(paths, "public_url")
		}
		if in.MaxBodyBytes != 0 {
			paths = append(paths, "max_body_bytes")
		}
		if in.Hmac != nil {
			paths = append(paths, "hmac")
		}
		if in.DedupeWindow != nil {
			paths = append(paths, "dedupe_window")
		}
	}
	for _, p := range paths {
		switch p {
		case "provider":
			out.Provider = in.Provider
		case "secrets":
			out.Secrets = in.Secrets
			// Expiries belong to positions; new secrets start without.
			out.SecretExpireTimes = in.SecretExpireTimes
		case "secret_expire_times", "secretExpireTimes":
			out.SecretExpireTimes = in.SecretExpireTimes
		case "tolerance":
			out.Tolerance = in.Tolerance
		case "public_url", "publicUrl":
			out.PublicUrl = in.PublicUrl
		case "max_body_bytes", "maxBodyBytes":
			out.MaxBodyBytes = in.MaxBodyBytes
		case "hmac":
			out.Hmac = in.Hmac
		case "dedupe_window", "dedupeWindow":
			out.DedupeWindow = in.DedupeWindow
		case "name":
			if in.Name != cur.Name {
				return nil, fmt.Errorf("name cannot be changed; create a new source")
			}
		case "create_time", "update_time", "createTime", "updateTime":
			return nil, fmt.Errorf("%s is output only", p)
		default:
			// grpc-gateway derives nested paths such as
			// "hmac.signature_header" from a PATCH body without a mask.
			sub, ok := strings.CutPrefix(p, "hmac.")
			if !ok {
				return nil, fmt.Errorf("update_mask: unknown field %q", p)
			}
			if out.Hmac == nil {
				out.Hmac = &ingressv1.HmacScheme{}
			}
			dst := out.Hmac.ProtoReflect()
			fields := dst.Descriptor().Fields()
			fd := fields.ByName(protoreflect.Name(sub))
			if fd == nil {
				fd = fields.ByJSONName(sub)
			}
			if fd == nil {
				return nil, fmt.Errorf("update_mask: unknown field %q", p)
			}
			dst.Set(fd, in.GetHmac().ProtoReflect().Get(fd))
		}
	}
	return out, nil
}
