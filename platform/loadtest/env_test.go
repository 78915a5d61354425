package loadtest

import "testing"

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
