// Package client resolves where the four services are and with which API
// key to call them (flags, HOOKYARD_* variables, a profile of the config
// file, defaults, in that order) and dials them over gRPC.
package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"go.yaml.in/yaml/v3"
)

// Default gRPC addresses (DESIGN.md).
const (
	DefaultIngress    = "127.0.0.1:9090"
	DefaultDispatcher = "127.0.0.1:9091"
	DefaultCache      = "127.0.0.1:9092"
	DefaultJobs       = "127.0.0.1:9093"
)

// Environment variables read by the command line.
const (
	EnvConfig     = "HOOKYARD_CONFIG"
	EnvProfile    = "HOOKYARD_PROFILE"
	EnvAPIKey     = "HOOKYARD_API_KEY"
	EnvIngress    = "HOOKYARD_INGRESS_ADDR"
	EnvDispatcher = "HOOKYARD_DISPATCHER_ADDR"
	EnvJobs       = "HOOKYARD_JOBS_ADDR"
	EnvCache      = "HOOKYARD_CACHE_ADDR"
	EnvTLS        = "HOOKYARD_TLS"
)

// Profile is one named set of settings in the config file.
type Profile struct {
	APIKey     string `yaml:"api_key,omitempty"`
	Ingress    string `yaml:"ingress,omitempty"`
	Dispatcher string `yaml:"dispatcher,omitempty"`
	Jobs       string `yaml:"jobs,omitempty"`
	Cache      string `yaml:"cache,omitempty"`
	TLS        bool   `yaml:"tls,omitempty"`
}

// File is the config file:
//
//	current: dev
//	profiles:
//	  dev:
//	    api_key: devkey-123
//	    dispatcher: 127.0.0.1:9091
type File struct {
	Current  string             `yaml:"current,omitempty"`
	Profiles map[string]Profile `yaml:"profiles,omitempty"`
}

// DefaultPath is $HOOKYARD_CONFIG, else config.yaml in the user's config
// directory (~/.config/hookyard/config.yaml on Linux).
func DefaultPath(getenv func(string) string) string {
	if p := getenv(EnvConfig); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "hookyard", "config.yaml")
}

// LoadFile reads a config file; a missing one is empty.
func LoadFile(path string) (*File, error) {
	f := &File{Profiles: map[string]Profile{}}
	if path == "" {
		return f, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if f.Profiles == nil {
		f.Profiles = map[string]Profile{}
	}
	return f, nil
}

// Save writes f to path, readable by the owner only (it holds API keys).
func (f *File) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	return nil
}

// Names lists the profiles, sorted.
func (f *File) Names() []string {
	var n []string
	for k := range f.Profiles {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Settings are the resolved connection settings.
type Settings struct {
	Profile    string
	APIKey     string
	Ingress    string
	Dispatcher string
	Jobs       string
	Cache      string
	TLS        bool
}

// Resolve fills what flags left empty from the environment, then the
// profile (flags.Profile, $HOOKYARD_PROFILE or the file's current one),
// then the defaults. A profile named but missing is an error.
func Resolve(flags Settings, tlsSet bool, getenv func(string) string, f *File) (Settings, error) {
	s := flags
	name := first(s.Profile, getenv(EnvProfile))
	var p Profile
	if name != "" {
		var ok bool
		if p, ok = f.Profiles[name]; !ok {
			return Settings{}, fmt.Errorf("no profile %q in the config file", name)
		}
	} else if f.Current != "" {
		name, p = f.Current, f.Profiles[f.Current]
	}
	s.Profile = name
	s.APIKey = first(s.APIKey, getenv(EnvAPIKey), p.APIKey)
	s.Ingress = first(s.Ingress, getenv(EnvIngress), p.Ingress, DefaultIngress)
	s.Dispatcher = first(s.Dispatcher, getenv(EnvDispatcher), p.Dispatcher, DefaultDispatcher)
	s.Jobs = first(s.Jobs, getenv(EnvJobs), p.Jobs, DefaultJobs)
	s.Cache = first(s.Cache, getenv(EnvCache), p.Cache, DefaultCache)
	if !tlsSet {
		switch getenv(EnvTLS) {
		case "1", "true", "yes":
			s.TLS = true
		case "":
			s.TLS = p.TLS
		}
	}
	return s, nil
}

func first(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}
