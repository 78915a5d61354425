package loadtest

import (
	"strings"
	"testing"
)

func TestEnv(t *testing.T) {
	t.Setenv("HOOKYARD_LOADTEST_X", "")
	if got := Env("HOOKYARD_LOADTEST_X", "def"); got != "def" {
		t.Errorf("empty variable: Env = %q, want the default", got)
	}
	t.Setenv("HOOKYARD_LOADTEST_X", "set")
	if got := Env("HOOKYARD_LOADTEST_X", "def"); got != "set" {
		t.Errorf("Env = %q, want %q", got, "set")
	}
}

func TestLoopback(t *testing.T) {
	for _, u := range []string{"amqp://guest:guest@127.0.0.1:5672/", "redis://localhost:6379/0", "redis://[::1]:6379", "amqp://127.0.0.2/"} {
		if err := Loopback(u); err != nil {
			t.Errorf("Loopback(%q) = %v, want nil", u, err)
		}
	}
	for _, u := range []string{"amqp://guest:secret@rabbit.example.com:5672/", "redis://10.0.0.5:6379", "redis://0.0.0.0:6379", "::not a url"} {
		err := Loopback(u)
		if err == nil {
			t.Errorf("Loopback(%q) = nil, want an error", u)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("Loopback(%q) error shows the password: %v", u, err)
		}
	}
}
