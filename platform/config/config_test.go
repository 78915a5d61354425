package config

import (
	"testing"
	"time"
)

func TestPrecedence(t *testing.T) {
	t.Setenv("HOOKYARD_HTTP_ADDR", ":7000")
	t.Setenv("HOOKYARD_GRPC_ADDR", ":7001")
	var c Common
	l := NewLoader("x")
	c.Register(l, Ports{HTTP: ":8080", GRPC: ":9090"})
	if err := l.Parse([]string{"-grpc-addr", ":7777"}); err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":7000" {
		t.Errorf("env should beat default: got %q", c.HTTPAddr)
	}
	if c.GRPCAddr != ":7777" {
		t.Errorf("flag should beat env: got %q", c.GRPCAddr)
	}
	if c.AMQPURL != "amqp://guest:guest@127.0.0.1:5672/" || c.RedisURL != "redis://127.0.0.1:6379/0" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestBadEnvIsAnError(t *testing.T) {
	t.Setenv("HOOKYARD_SHUTDOWN_TIMEOUT", "soon")
	var c Common
	l := NewLoader("x")
	c.Register(l, Ports{HTTP: ":1", GRPC: ":2"})
	if err := l.Parse(nil); err == nil {
		t.Fatal("invalid duration in environment was accepted")
	}
	var n int
	t.Setenv("HOOKYARD_N", "many")
	l2 := NewLoader("y")
	l2.Int(&n, "n", "HOOKYARD_N", 3, "")
	if err := l2.Parse(nil); err == nil {
		t.Fatal("invalid int in environment was accepted")
	}
}

func TestDurationFromEnv(t *testing.T) {
	t.Setenv("HOOKYARD_SHUTDOWN_TIMEOUT", "3s")
	var c Common
	l := NewLoader("x")
	c.Register(l, Ports{})
	if err := l.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if c.ShutdownTimeout != 3*time.Second {
		t.Fatalf("got %v", c.ShutdownTimeout)
	}
}

func TestStrayArgumentsRefused(t *testing.T) {
	var c Common
	l := NewLoader("x")
	c.Register(l, Ports{})
	if err := l.Parse([]string{"oops"}); err == nil {
		t.Fatal("positional argument accepted")
	}
}

func TestBodyLimits(t *testing.T) {
	var c Common
	l := NewLoader("x")
	c.Register(l, Ports{})
	if err := l.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if c.MaxBodyBytes != 1<<20 || c.BodyMemoryBytes != 32<<20 {
		t.Fatalf("defaults: max body %d, body memory %d", c.MaxBodyBytes, c.BodyMemoryBytes)
	}
	t.Setenv("HOOKYARD_MAX_BODY_BYTES", "4MiB")
	t.Setenv("HOOKYARD_BODY_MEMORY_BYTES", "1000000")
	l = NewLoader("x")
	c.Register(l, Ports{})
	if err := l.Parse([]string{"-body-memory-bytes", "2GiB"}); err != nil {
		t.Fatal(err)
	}
	if c.MaxBodyBytes != 4<<20 || c.BodyMemoryBytes != 2<<30 {
		t.Fatalf("got max body %d, body memory %d", c.MaxBodyBytes, c.BodyMemoryBytes)
	}
	for _, bad := range []string{"lots", "-1", "1.5MiB", "0", "10XB"} {
		t.Setenv("HOOKYARD_MAX_BODY_BYTES", bad)
		l = NewLoader("x")
		c.Register(l, Ports{})
		if err := l.Parse(nil); err == nil {
			t.Errorf("HOOKYARD_MAX_BODY_BYTES=%q accepted", bad)
		}
	}
}
