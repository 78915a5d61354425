package namespace

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
)

// HeaderMask stands in for every origin header value in responses: the
// values are credentials (Authorization, API keys).
const HeaderMask = "********"

// Masked returns a copy of ns fit for a response, its header values
// replaced by HeaderMask.
func Masked(ns *cachev1.Namespace) *cachev1.Namespace {
	if len(ns.GetHeaders()) == 0 {
		return ns
	}
	out := proto.Clone(ns).(*cachev1.Namespace)
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
