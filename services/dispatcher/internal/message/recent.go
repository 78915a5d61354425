package message

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// recentAttempts is how many of a message's latest attempts are read to
// find each delivery's last one: the log is bounded by the retry schedule
// times the endpoints, and a listing should not read it all.
const recentAttempts = 50

// summaryScript returns a message's meta (its chunks joined: see
// metaChunk) and its delivery fields ("d:<endpoint>", value, ...) without
// the body, which may be large and a listing does not show.
var summaryScript = redis.NewScript(`
local meta = redis.call('HGET', KEYS[1], 'meta')
if not meta then return {} end
local out, more = {meta}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 2) == 'd:' then
    out[#out + 1] = f
    out[#out + 1] = all[i + 1]
  elseif string.sub(f, 1, 2) == 'm+' then
    more[tonumber(string.sub(f, 3))] = all[i + 1]
  end
end
out[1] = meta .. table.concat(more)
return out
`)

// Recent pages through the tenant's messages, newest first, each with its
// deliveries and the last attempt of each (among the message's latest
// attempts); Data is left out. Messages that expired since they were
// indexed are skipped. After the stream of ids come those of the sorted
// set that indexed messages before it, while it lasts.
func (s *Store) Recent(ctx context.Context, tenant string, size int, token string) ([]*dispatcherv1.Message, string, error) {
	ids, next, err := s.recentIDs(ctx, tenant, size, token)
	if err != nil {
		return nil, "", err
	}
	sums := make([]*redis.Cmd, len(ids))
	atts := make([]*redis.Cmd, len(ids))
	pipe := s.rdb.Pipeline()
	for i, id := range ids {
		sums[i] = summaryScript.Eval(ctx, pipe, []string{s.msgKey(tenant, id)})
		atts[i] = readAttemptsScript.Eval(ctx, pipe, []string{s.attKey(tenant, id)}, -recentAttempts, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", fmt.Errorf("read messages: %w", err)
	}
	out := make([]*dispatcherv1.Message, 0, len(ids))
	for i, id := range ids {
		vals, _ := sums[i].StringSlice()
		if len(vals) == 0 {
			continue // expired
		}
		var m Message
		if err := decodeMeta(vals[0], &m); err != nil {
			continue
		}
		msg := &dispatcherv1.Message{Id: id, Source: m.Source, Type: m.Type, CreateTime: timestamppb.New(m.CreateTime)}
		log, _ := atts[i].StringSlice()
		last := lastAttempts(log)
		for j := 1; j+1 < len(vals); j += 2 {
			ep, _ := strings.CutPrefix(vals[j], "d:")
			d, err := decodeDelivery(vals[j+1])
			if err != nil {
				continue
			}
			del := &dispatcherv1.Delivery{EndpointId: ep, Status: d.Status, Attempts: int32(d.Attempts), LastAttempt: last[ep]}
			if d.Status == StatusRetrying && !d.Next.IsZero() {
				del.NextAttemptTime = timestamppb.New(d.Next)
			}
			msg.Deliveries = append(msg.Deliveries, del)
		}
		slices.SortFunc(msg.Deliveries, func(a, b *dispatcherv1.Delivery) int { return strings.Compare(a.EndpointId, b.EndpointId) })
		out = append(out, msg)
	}
	return out, next, nil
}

// lastAttempts picks the latest of the logged attempts per endpoint.
func lastAttempts(log []string) map[string]*dispatcherv1.Attempt {
	last := map[string]*dispatcherv1.Attempt{}
	for _, v := range log {
		if a, err := decodeAttempt(v); err == nil {
			last[a.GetEndpointId()] = a
		}
	}
	return last
}

// recentIDs returns a page of recent message ids and the token of the
// next: streamToken and the base64 of a stream id where the next page
// starts in the stream, or an offset into the legacy sorted set
// (encodeOffset, as tokens were before the stream).
func (s *Store) recentIDs(ctx context.Context, tenant string, size int, token string) ([]string, string, error) {
	var ids []string
	off := 0
	if token == "" || strings.HasPrefix(token, streamToken) {
		start := "+"
		if token != "" {
			b, err := base64.RawURLEncoding.DecodeString(token[len(streamToken):])
			if err != nil || !isStreamID(string(b)) {
				return nil, "", ErrBadToken
			}
			start = string(b)
		}
		entries, err := s.rdb.XRevRangeN(ctx, s.recentKey(tenant), start, "-", int64(size+1)).Result()
		if err != nil {
			return nil, "", fmt.Errorf("list messages: %w", err)
		}
		for i, e := range entries {
			if i == size {
				return ids, streamToken + base64.RawURLEncoding.EncodeToString([]byte(e.ID)), nil
			}
			id, _ := e.Values["i"].(string)
			ids = append(ids, id)
		}
	} else {
		var err error
		if off, err = decodeOffset(token); err != nil {
			return nil, "", err
		}
	}
	// The stream is exhausted: the legacy index follows.
	rest := size - len(ids)
	old, err := s.rdb.ZRevRange(ctx, s.legacyRecentKey(tenant), int64(off), int64(off+rest)).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list messages: %w", err)
	}
	next := ""
	if len(old) > rest {
		old = old[:rest]
		next = encodeOffset(off + rest)
	}
	return append(ids, old...), next, nil
}

// streamToken starts a page token that points into the stream of ids
// (the legacy tokens, offsets, are base64 of "o<n>" and never start so).
const streamToken = "s."

// isStreamID reports whether id is a stream entry id, <ms>-<seq>.
func isStreamID(id string) bool {
	ms, seq, ok := strings.Cut(id, "-")
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return ok && err1 == nil && err2 == nil
}
