package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// done prints res as JSON, or text for people.
func (a *app) done(res proto.Message, text string) error {
	if a.out().IsJSON() {
		return a.out().JSONMessage(res, true)
	}
	_, err := fmt.Fprintln(a.stdout, text)
	return err
}

// readArg returns s, or the content of the file after '@' ("@-" is stdin).
func readArg(s string) ([]byte, error) {
	name, ok := strings.CutPrefix(s, "@")
	if !ok {
		return []byte(s), nil
	}
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// jsonValue parses a JSON flag (or @file) into a Value.
func jsonValue(s, flag string) (*structpb.Value, error) {
	b, err := readArg(s)
	if err != nil {
		return nil, usagef("%s: %v", flag, err)
	}
	v := &structpb.Value{}
	if err := protojson.Unmarshal(b, v); err != nil {
		return nil, usagef("%s is not valid JSON: %v", flag, err)
	}
	return v, nil
}

// keyValues parses "key<sep>value" flags.
func keyValues(in []string, sep string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, sep)
		if !ok || strings.TrimSpace(k) == "" {
			return nil, usagef("%q: use 'name%svalue'", kv, sep)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}
