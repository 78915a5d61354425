package redisconn

import (
	"strings"
	"testing"
)

// A Redis URL that does not parse is reported without its password: the
// error ends up on stderr and in process supervisors' logs.
func TestOpenDoesNotEchoPassword(t *testing.T) {
	for _, raw := range []string{
		"redis://:s3cretpass@127.0.0.1:bad/0",
		"redis://user:s3cretpass@127.0.0.1:6379/0\x7f",
		"redis+cluster://user:s3cretpass@[::1/",
	} {
		_, err := Open(raw)
		if err == nil {
			t.Errorf("Open(%q) accepted", raw)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q) echoes the password: %v", raw, err)
		}
	}
}
