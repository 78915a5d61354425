package redisconn

import (
	"context"
	"fmt"
	"os"
	"testing"
)

func TestOpenKinds(t *testing.T) {
	cases := map[string]string{
		"redis://127.0.0.1:6379/0":                              "*redis.Client",
		"redis+cluster://127.0.0.1:7000?addr=127.0.0.1:7001":    "*redis.ClusterClient",
		"redis://127.0.0.1:26379?master_name=mymaster&addr=x:1": "*redis.Client",
	}
	for u, want := range cases {
		c, err := Open(u)
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		if got := fmt.Sprintf("%T", c); got != want {
			t.Errorf("Open(%q) gave %s, want %s", u, got, want)
		}
		c.Close()
	}
	for _, bad := range []string{"http://x", "redis://host:6379/notadb", "://"} {
		if _, err := Open(bad); err == nil {
			t.Errorf("Open(%q) accepted", bad)
		}
	}
}

func TestCheckReal(t *testing.T) {
	u := os.Getenv("HOOKYARD_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	c, err := Open(u)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := Check(context.Background(), c); err != nil {
		t.Fatalf("real redis not reachable: %v", err)
	}
	dead, _ := Open("redis://127.0.0.1:1/0")
	defer dead.Close()
	if err := Check(context.Background(), dead); err == nil {
		t.Fatal("Check passed against a closed port")
	}
}
