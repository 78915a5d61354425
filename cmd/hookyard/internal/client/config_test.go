package client

import (
	"os"
	"path/filepath"
	"testing"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestResolveOrder: flags beat the environment, which beats the profile,
// which beats the defaults.
func TestResolveOrder(t *testing.T) {
	f := &File{Current: "dev", Profiles: map[string]Profile{
		"dev":  {APIKey: "profile-key", Dispatcher: "dev:9091", Jobs: "devjobs:9093", TLS: true},
		"prod": {APIKey: "prod-key", Ingress: "prod:443"},
	}}
	s, err := Resolve(Settings{Dispatcher: "flag:1"}, false, envOf(map[string]string{EnvAPIKey: "env-key", EnvDispatcher: "env:2"}), f)
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{Profile: "dev", APIKey: "env-key", Dispatcher: "flag:1", Jobs: "devjobs:9093", Ingress: DefaultIngress, Cache: DefaultCache, TLS: true}
	if s != want {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}

	s, err = Resolve(Settings{}, false, envOf(map[string]string{EnvProfile: "prod"}), f)
	if err != nil {
		t.Fatal(err)
	}
	if s.APIKey != "prod-key" || s.Ingress != "prod:443" || s.Dispatcher != DefaultDispatcher || s.TLS {
		t.Fatalf("HOOKYARD_PROFILE=prod: %+v", s)
	}
	// --tls=false on the command line wins over the profile's tls: true.
	if s, _ := Resolve(Settings{}, true, envOf(nil), f); s.TLS {
		t.Fatal("--tls=false did not override the profile")
	}
	if _, err := Resolve(Settings{Profile: "nope"}, false, envOf(nil), f); err == nil {
		t.Fatal("a missing profile was accepted")
	}
}

func TestFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "config.yaml")
	f, err := LoadFile(path)
	if err != nil || len(f.Profiles) != 0 {
		t.Fatalf("missing file: %v %+v", err, f)
	}
	f.Profiles["dev"] = Profile{APIKey: "k-123456", Dispatcher: "127.0.0.1:9091"}
	f.Current = "dev"
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved with %v, %v; want mode 0600", fi.Mode(), err)
	}
	g, err := LoadFile(path)
	if err != nil || g.Current != "dev" || g.Profiles["dev"] != f.Profiles["dev"] {
		t.Fatalf("read back %+v, %v", g, err)
	}
	if err := os.WriteFile(path, []byte("profiles:\n  dev:\n    apikey: typo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(path); err == nil {
		t.Fatal("a misspelled field was accepted")
	}
}
