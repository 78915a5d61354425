package rabbit

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseURLs(t *testing.T) {
	good := map[string][]string{
		"amqp://guest:guest@127.0.0.1:5672/":        {"amqp://guest:guest@127.0.0.1:5672/"},
		"amqp://a:1/v, amqp://b:2/v ,amqps://c:3/v": {"amqp://a:1/v", "amqp://b:2/v", "amqps://c:3/v"},
		"amqp://u:p%2Cq@a:1/,amqp://u:p%2Cq@b:1/":   {"amqp://u:p%2Cq@a:1/", "amqp://u:p%2Cq@b:1/"},
	}
	for in, want := range good {
		got, err := ParseURLs(in)
		if err != nil {
			t.Errorf("ParseURLs(%q): %v", in, err)
			continue
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("ParseURLs(%q) = %q, want %q", in, got, want)
		}
	}
	bad := map[string]string{
		"":                          "no AMQP URL",
		"  ":                        "no AMQP URL",
		"amqp://a:1/,":              "AMQP URL 2 of 2 is empty",
		"amqp://a:1/,,amqp://b:1/":  "AMQP URL 2 of 3 is empty",
		"http://a:1/":               "AMQP URL 1 of 1: AMQP scheme",
		"amqp://a:1/,b:2":           "AMQP URL 2 of 2",
		"amqp://a:1/,amqp://a:1/":   "listed twice",
		"amqp://a:1/x,amqp://b:1/y": `names virtual host "y", the first names "x"`,
		"amqp://a:notaport/":        "AMQP URL 1 of 1",
		"amqp://u:s3cret,pw@a:1/":   "%2C",
		"amqp://u:s3cret@a:1/,amqp://u:s3cret@[::1/": "AMQP URL 2 of 2",
	}
	for in, want := range bad {
		_, err := ParseURLs(in)
		if err == nil {
			t.Errorf("ParseURLs(%q) accepted", in)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURLs(%q) = %q, want it to say %q", in, err, want)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseURLs(%q) echoes the password: %v", in, err)
		}
	}
}

// With a list of nodes the Conn connects to the first, and when that
// connection is lost moves on to the next node while the first refuses;
// past the last it wraps around to the first.
func TestConnFailsOverToTheNextNode(t *testing.T) {
	p1, p2 := newProxy(t), newProxy(t)
	c := dialTest(t, p1.URL()+","+p2.URL(), Config{Setup: DeclareFunc(DeclareTopology)})
	waitReady(t, c)
	if p1.Conns() != 1 || p2.Conns() != 0 {
		t.Fatalf("connections through node 1, node 2 = %d, %d, want 1, 0", p1.Conns(), p2.Conns())
	}

	p1.Cut() // node 1 dies and stays down
	eventually(t, 10*time.Second, "a connection to node 2", func() bool {
		return c.Check(context.Background()) == nil && p2.Conns() == 1
	})
	if g := c.Generation(); g != 2 {
		t.Fatalf("generation = %d, want 2", g)
	}

	p1.Restore()
	p2.Cut()
	eventually(t, 10*time.Second, "a connection back to node 1", func() bool {
		return c.Check(context.Background()) == nil && p1.Conns() == 1
	})
}

// A node that refuses connections at start-up is skipped.
func TestConnSkipsADeadNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "amqp://guest:guest@" + ln.Addr().String() + "/"
	ln.Close()
	p := newProxy(t)
	c := dialTest(t, dead+","+p.URL(), Config{})
	waitReady(t, c)
	if p.Conns() != 1 {
		t.Fatalf("connections through the live node = %d, want 1", p.Conns())
	}
}

// A list that does not parse is never dialled, and readiness says why.
func TestConnReportsABadURLList(t *testing.T) {
	c := dialTest(t, amqpURL()+",,", Config{})
	eventually(t, 5*time.Second, "Check to report the bad list", func() bool {
		err := c.Check(context.Background())
		return err != nil && strings.Contains(err.Error(), "is empty")
	})
}
