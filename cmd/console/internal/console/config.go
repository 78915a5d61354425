package console

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/hookyard/hookyard/platform/config"
)

// Services are the upstreams the console proxies to, by the name used in
// its /api/{name}/ routes, with the default address of each REST gateway
// (the service's HOOKYARD_HTTP_ADDR).
var Services = []struct{ Name, Default string }{
	{"ingress", "http://127.0.0.1:8080"},
	{"dispatcher", "http://127.0.0.1:8081"},
	{"cache", "http://127.0.0.1:8082"},
	{"jobs", "http://127.0.0.1:8083"},
}

// Config holds the console's settings.
type Config struct {
	// HTTPAddr is where the console listens.
	HTTPAddr string
	// Upstreams maps a service name to the base URL of its REST gateway.
	Upstreams map[string]*string
	// Timeout bounds one proxied request (a task wait may take minutes).
	Timeout         time.Duration
	ShutdownTimeout time.Duration
	LogLevel        string
}

// Register adds the console's flags and HOOKYARD_* variables to l.
func (c *Config) Register(l *config.Loader) {
	l.String(&c.HTTPAddr, "http-addr", "HOOKYARD_CONSOLE_HTTP_ADDR", ":8084", "console listen address")
	c.Upstreams = make(map[string]*string, len(Services))
	for _, s := range Services {
		p := new(string)
		l.String(p, s.Name+"-http-url", "HOOKYARD_"+strings.ToUpper(s.Name)+"_HTTP_URL", s.Default,
			"base URL of the "+s.Name+" service's REST gateway")
		c.Upstreams[s.Name] = p
	}
	l.Duration(&c.Timeout, "proxy-timeout", "HOOKYARD_CONSOLE_PROXY_TIMEOUT", 6*time.Minute, "longest a proxied API request may take")
	l.Duration(&c.ShutdownTimeout, "shutdown-timeout", "HOOKYARD_SHUTDOWN_TIMEOUT", 25*time.Second, "how long graceful shutdown may take")
	l.String(&c.LogLevel, "log-level", "HOOKYARD_LOG_LEVEL", "info", "debug, info, warn or error")
}

// parseUpstream checks that u is an absolute http(s) URL without query.
func parseUpstream(name, u string) (*url.URL, error) {
	p, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("%s URL: %w", name, err)
	}
	if (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.RawQuery != "" || p.Fragment != "" || p.User != nil {
		return nil, fmt.Errorf("%s URL %q: want http(s)://host[:port][/path]", name, u)
	}
	return p, nil
}
