package message

import (
	"fmt"
	"strings"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// Bodies are kept in Redis for the retention period, once per message, and
// usually dominate what a message costs there; webhook bodies are JSON and
// compress several times over. A compressed body is stored in the field
// bodyZ, one that would not shrink (or one written before compression) in
// bodyRaw.
const (
	bodyRaw = "body"
	bodyZ   = "bz"
	// minCompress: smaller bodies are stored as they are; the frame
	// overhead eats the gain.
	minCompress = 128
)

// maxDecoded bounds a decompressed body (the API accepts at most 1 MiB,
// the broker's events somewhat more); a corrupt frame cannot make it
// allocate more.
const maxDecoded = 64 << 20

var (
	// EncodeAll and DecodeAll are safe for concurrent use.
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true))
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxDecoded), zstd.WithDecoderConcurrency(0))
)

// encodeBody returns the field and value a body is stored as.
func encodeBody(b []byte) (string, []byte) {
	if len(b) < minCompress {
		return bodyRaw, b
	}
	z := zenc.EncodeAll(b, make([]byte, 0, len(b)/4))
	if len(z) >= len(b)-len(b)/8 {
		return bodyRaw, b
	}
	return bodyZ, z
}

// decodeBody reads the body of a message's fields.
func decodeBody(vals map[string]string) ([]byte, error) {
	z, ok := vals[bodyZ]
	if !ok {
		return []byte(vals[bodyRaw]), nil
	}
	b, err := zdec.DecodeAll([]byte(z), nil)
	if err != nil {
		return nil, fmt.Errorf("decompress body: %w", err)
	}
	return b, nil
}

// encodeAttempt is an attempt as the log stores it: the protobuf binary
// encoding, about half the size of its JSON.
func encodeAttempt(a *dispatcherv1.Attempt) ([]byte, error) {
	return proto.Marshal(a)
}

// decodeAttempt reads a logged attempt: binary, or JSON as logged before.
// A binary encoding never starts with '{' (it would be field 15 as a
// group, which Attempt does not have).
func decodeAttempt(v string) (*dispatcherv1.Attempt, error) {
	a := &dispatcherv1.Attempt{}
	var err error
	if strings.HasPrefix(v, "{") {
		err = protojson.Unmarshal([]byte(v), a)
	} else {
		err = proto.Unmarshal([]byte(v), a)
	}
	if err != nil {
		return nil, fmt.Errorf("decode attempt: %w", err)
	}
	return a, nil
}
