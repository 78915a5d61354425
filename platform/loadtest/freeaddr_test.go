package loadtest

import (
	"net"
	"strconv"
	"testing"
)

// A child's port lies below the ephemeral range, where outgoing
// connections cannot take it before the child binds it, and is free.
func TestFreeAddrIsBelowTheEphemeralRange(t *testing.T) {
	lo := ephemeralLow()
	for range 20 {
		addr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port < 10000 || port >= lo {
			t.Fatalf("port %d, want 10000 <= port < %d", port, lo)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s is not free: %v", addr, err)
		}
		l.Close()
	}
}
