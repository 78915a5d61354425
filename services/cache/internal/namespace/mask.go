package namespace

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
)

// HeaderMask stands in for every origin header value in responses: the
// values are credentials (Authorization, API keys).
const HeaderMask = "********"

// View returns a copy of rec's namespace fit for a response: its uid set
// and its header values replaced by HeaderMask.
func View(rec *Record) *cachev1.Namespace {
	out := proto.Clone(rec.NS).(*cachev1.Namespace)
	out.Uid = rec.ID
	for k := range out.Headers {
		out.Headers[k] = HeaderMask
	}
	return out
}

// Unmask puts back the stored value of every header of next that a client
// sent as HeaderMask (it echoed a response), taking it from cur.
func Unmask(next, cur *cachev1.Namespace) error {
	for k, v := range next.GetHeaders() {
		if v != HeaderMask {
			continue
		}
		old, ok := cur.GetHeaders()[k]
		if !ok {
			return fmt.Errorf("headers: %q is %q, which keeps a stored value, but the namespace has no such header", k, HeaderMask)
		}
		next.Headers[k] = old
	}
	return nil
}
