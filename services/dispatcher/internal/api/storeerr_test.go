package api

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A Redis failure's text (address, key, server message) is not sent to the
// client.
func TestStoreErrorHidesTheCause(t *testing.T) {
	err := storeErr(errors.New("dial tcp 10.1.2.3:6379: connect: connection refused"), "endpoint", "ep-1")
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || strings.Contains(st.Message(), "6379") || len(st.Details()) == 0 {
		t.Fatalf("got %v %q %v; want Unavailable with details and without the cause", st.Code(), st.Message(), st.Details())
	}
}
