package loadtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
)

// Env returns the environment variable key, or def if it is unset or
// empty, for the addresses of the broker and Redis a benchmark uses.
func Env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Loopback checks that raw points at this machine: a benchmark floods what
// it is pointed at, so it must never reach a shared broker or Redis by
// accident.
func Loopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("parse %q: %w", raw, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s://%s is not a loopback address; the benchmark only runs against local services", u.Scheme, u.Host)
}
