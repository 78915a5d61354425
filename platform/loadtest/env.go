package loadtest

import "os"

// Env returns the environment variable key, or def if it is unset or
// empty, for the addresses of the broker and Redis a benchmark uses.
func Env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
