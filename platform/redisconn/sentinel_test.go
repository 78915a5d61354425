package redisconn

import (
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// redis+sentinel:// names the sentinels; the client follows the primary
// they report for master_name.
func TestOpenSentinel(t *testing.T) {
	for _, u := range []string{
		"redis+sentinel://127.0.0.1:26391/0?master_name=hookyard&addr=127.0.0.1:26392&addr=127.0.0.1:26393",
		"rediss+sentinel://sentinel-1:26379/2?master_name=m&password=pw",
		"redis://127.0.0.1:26391/0?master_name=hookyard",
	} {
		c, err := Open(u)
		if err != nil {
			t.Errorf("Open(%q): %v", u, err)
			continue
		}
		// A failover client is a *redis.Client whose dialer asks the
		// sentinels; its options say so.
		if got := fmt.Sprintf("%T", c); got != "*redis.Client" {
			t.Errorf("Open(%q) gave %s, want *redis.Client", u, got)
		} else if addr := c.(*redis.Client).Options().Addr; addr != "FailoverClient" {
			t.Errorf("Open(%q) dials %q, want the sentinel failover dialer", u, addr)
		}
		c.Close()
	}
}

func TestOpenSentinelErrors(t *testing.T) {
	for in, want := range map[string]string{
		"redis+sentinel://127.0.0.1:26391/0":                           "master_name is required",
		"redis+sentinel://127.0.0.1:26391/0?master_name=":              "master_name is required",
		"redis+sentinel://127.0.0.1:26391/0?master_name=m&addr=nope":   "addr",
		"redis+sentinel://127.0.0.1:26391/x?master_name=m":             "database",
		"redis+sentinel://127.0.0.1:26391/0?master_name=m&bogus=1":     "unexpected option: bogus",
		"http+sentinel://127.0.0.1:26391/0?master_name=m":              "scheme",
		"redis+sentinel://:s3cret@127.0.0.1:26391/0?master_name=m&x=1": "unexpected option",
	} {
		_, err := Open(in)
		if err == nil {
			t.Errorf("Open(%q) accepted", in)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "sentinel") {
			t.Errorf("Open(%q) = %q, want a sentinel error saying %q", in, err, want)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q) echoes the password: %v", in, err)
		}
	}
}
