package message

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
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

// A message hash stays one compact listpack while every value is at most
// hash-max-listpack-value (64 bytes by default); a longer one turns the
// whole hash into a hashtable of separate allocations, about twice the
// memory for a small message. So a stored body of up to maxChunked bytes is
// split into chunks of listpackValue bytes: the first in bodyRaw or bodyZ,
// the rest in chunkField(1), chunkField(2), ... A longer body is stored
// whole; beside it the hashtable's overhead is small. Meta is split the
// same way, into meta, metaChunk(1), ...
const (
	listpackValue = 64
	maxChunked    = 1024
)

// chunkField is the field of a body's i-th chunk after the first.
func chunkField(i int) string { return "+" + strconv.Itoa(i) }

// metaChunk is the field of meta's i-th chunk after the first.
func metaChunk(i int) string { return "m+" + strconv.Itoa(i) }

// chunks returns the fields and values (alternating) that store v in
// chunks of listpackValue bytes, the first under field.
func chunks(field string, v []byte, next func(int) string) []any {
	out := []any{field, v[:min(len(v), listpackValue)]}
	for i := 1; i*listpackValue < len(v); i++ {
		out = append(out, next(i), v[i*listpackValue:min((i+1)*listpackValue, len(v))])
	}
	return out
}

// joinChunks reads back what chunks stored under first.
func joinChunks(vals map[string]string, first string, next func(int) string) string {
	v := vals[first]
	if _, ok := vals[next(1)]; !ok {
		return v
	}
	var sb strings.Builder
	sb.WriteString(v)
	for i := 1; ; i++ {
		c, ok := vals[next(i)]
		if !ok {
			return sb.String()
		}
		sb.WriteString(c)
	}
}

// encodeBody returns the fields and values (alternating) a body is stored
// as.
func encodeBody(b []byte) []any {
	field := bodyRaw
	if len(b) >= minCompress {
		if z := zenc.EncodeAll(b, make([]byte, 0, len(b)/4)); len(z) < len(b)-len(b)/8 {
			field, b = bodyZ, z
		}
	}
	if len(b) > maxChunked {
		return []any{field, b}
	}
	return chunks(field, b, chunkField)
}

// decodeBody reads the body of a message's fields.
func decodeBody(vals map[string]string) ([]byte, error) {
	if _, ok := vals[bodyZ]; !ok {
		return []byte(joinChunks(vals, bodyRaw, chunkField)), nil
	}
	b, err := zdec.DecodeAll([]byte(joinChunks(vals, bodyZ, chunkField)), nil)
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

// Meta and delivery states are stored in a compact binary form, marked by
// a leading version byte (JSON, as stored by earlier versions, starts with
// '{'): as JSON they were 200 and 70 bytes, over the 64 that keep a hash a
// listpack.
const binaryV1 = 1

// Meta fields (protobuf wire format after the version byte, so fields can
// be added). The routing key is left out when it is <source>.<type>, the
// content type when it is application/json. The create time is in Unix
// nanoseconds, the event time in nanoseconds from it (it is usually close,
// and a few bytes shorter so), both zigzag-encoded and left out when zero.
const (
	metaOrig protowire.Number = iota + 1
	metaSource
	metaType
	metaKey
	metaContentType
	metaEventTime
	metaCreateTime
)

const defaultContentType = "application/json"

func encodeMeta(m *Message) []byte {
	b := []byte{binaryV1}
	str := func(n protowire.Number, v string) {
		b = protowire.AppendTag(b, n, protowire.BytesType)
		b = protowire.AppendString(b, v)
	}
	tm := func(n protowire.Number, t time.Time, from int64) {
		if !t.IsZero() {
			b = protowire.AppendTag(b, n, protowire.VarintType)
			b = protowire.AppendVarint(b, protowire.EncodeZigZag(t.UnixNano()-from))
		}
	}
	if m.Orig != "" {
		str(metaOrig, m.Orig)
	}
	str(metaSource, m.Source)
	str(metaType, m.Type)
	if m.RoutingKey != m.Source+"."+m.Type {
		str(metaKey, m.RoutingKey)
	}
	if m.ContentType != defaultContentType {
		str(metaContentType, m.ContentType)
	}
	var created int64
	if !m.CreateTime.IsZero() {
		created = m.CreateTime.UnixNano()
	}
	tm(metaCreateTime, m.CreateTime, 0)
	tm(metaEventTime, m.EventTime, created)
	return b
}

var errCorrupt = errors.New("corrupt record")

// decodeMeta reads a message's meta into m: binary, or JSON as stored
// before.
func decodeMeta(v string, m *Message) error {
	if strings.HasPrefix(v, "{") {
		return json.Unmarshal([]byte(v), m)
	}
	if v == "" || v[0] != binaryV1 {
		return errCorrupt
	}
	b := []byte(v[1:])
	key, ct := false, false
	var event *int64
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return errCorrupt
		}
		b = b[l:]
		var s string
		var x uint64
		switch typ {
		case protowire.BytesType:
			var raw []byte
			raw, l = protowire.ConsumeBytes(b)
			s = string(raw)
		case protowire.VarintType:
			x, l = protowire.ConsumeVarint(b)
		default:
			l = protowire.ConsumeFieldValue(n, typ, b)
		}
		if l < 0 {
			return errCorrupt
		}
		b = b[l:]
		switch n {
		case metaOrig:
			m.Orig = s
		case metaSource:
			m.Source = s
		case metaType:
			m.Type = s
		case metaKey:
			m.RoutingKey, key = s, true
		case metaContentType:
			m.ContentType, ct = s, true
		case metaEventTime:
			e := protowire.DecodeZigZag(x)
			event = &e
		case metaCreateTime:
			m.CreateTime = time.Unix(0, protowire.DecodeZigZag(x)).UTC()
		}
	}
	if event != nil {
		var created int64
		if !m.CreateTime.IsZero() {
			created = m.CreateTime.UnixNano()
		}
		m.EventTime = time.Unix(0, created+*event).UTC()
	}
	if !key {
		m.RoutingKey = m.Source + "." + m.Type
	}
	if !ct {
		m.ContentType = defaultContentType
	}
	return nil
}

// A delivery state is the version byte, the status code, the attempts
// (uvarint), the next attempt time (Unix nanoseconds, zigzag uvarint, 0
// when zero) and the task copy (the rest). The scripts in store.go read
// the status and attempts at these places: keep them.
var statusCodes = map[string]byte{StatusPending: 1, StatusRetrying: 2, StatusDelivered: 3, StatusFailed: 4, StatusHeld: 5}

var statusNames = func() map[byte]string {
	out := map[byte]string{}
	for k, v := range statusCodes {
		out[v] = k
	}
	return out
}()

func encodeDelivery(d Delivery) []byte {
	code, ok := statusCodes[d.Status]
	if !ok || d.Attempts < 0 {
		v, _ := json.Marshal(d) // not one of ours; still readable
		return v
	}
	b := []byte{binaryV1, code}
	b = binary.AppendUvarint(b, uint64(d.Attempts))
	var next uint64
	if !d.Next.IsZero() {
		next = protowire.EncodeZigZag(d.Next.UnixNano())
	}
	b = binary.AppendUvarint(b, next)
	return append(b, d.Copy...)
}

// decodeDelivery reads a delivery state: binary, or JSON as stored before.
func decodeDelivery(v string) (Delivery, error) {
	var d Delivery
	if strings.HasPrefix(v, "{") {
		err := json.Unmarshal([]byte(v), &d)
		return d, err
	}
	if len(v) < 4 || v[0] != binaryV1 || statusNames[v[1]] == "" {
		return d, errCorrupt
	}
	d.Status = statusNames[v[1]]
	b := []byte(v[2:])
	n, l := binary.Uvarint(b)
	if l <= 0 {
		return d, errCorrupt
	}
	d.Attempts, b = int(n), b[l:]
	next, l := binary.Uvarint(b)
	if l <= 0 {
		return d, errCorrupt
	}
	if next != 0 {
		d.Next = time.Unix(0, protowire.DecodeZigZag(next)).UTC()
	}
	d.Copy = string(b[l:])
	return d, nil
}
