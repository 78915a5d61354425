package server

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestPageSize(t *testing.T) {
	for in, want := range map[int32]int{0: DefaultPageSize, 1: 1, 999: 999, MaxPageSize + 1: MaxPageSize} {
		if got, err := PageSize(in); err != nil || got != want {
			t.Errorf("PageSize(%d) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := PageSize(-1); status.Code(err) != codes.InvalidArgument {
		t.Errorf("PageSize(-1): %v, want InvalidArgument", err)
	}
}
