package server

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Paging defaults shared by every List method, so page_size means the same
// on all four services.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// PageSize applies the paging defaults: 0 is DefaultPageSize, more than
// MaxPageSize is MaxPageSize (as AIP-158 asks), a negative size is the
// caller's error.
func PageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, status.Errorf(codes.InvalidArgument, "page_size must not be negative, got %d", n)
	case n == 0:
		return DefaultPageSize, nil
	case n > MaxPageSize:
		return MaxPageSize, nil
	}
	return int(n), nil
}
