package ssrf

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// Defaults for ClientOptions. Webhook deliveries are small requests to
// servers that should answer quickly; a subscriber that needs longer is
// treated as failing and retried later rather than holding a worker.
const (
	DefaultConnectTimeout         = 5 * time.Second
	DefaultTimeout                = 15 * time.Second
	DefaultTLSHandshakeTimeout    = 5 * time.Second
	DefaultIdleConnTimeout        = 90 * time.Second
	DefaultMaxIdleConns           = 100
	DefaultMaxIdleConnsPerHost    = 4
	DefaultMaxResponseHeaderBytes = 64 << 10
)

// Dialer returns a dialer whose Control hook checks every address it is
// about to connect to. Control runs after name resolution and before
// connect(2), once per candidate address (including each address tried by
// Happy Eyeballs), so the address checked is exactly the address used and
// a DNS-rebinding attacker gets no second resolution to exploit.
func (p Policy) Dialer(timeout time.Duration) *net.Dialer {
	// Copy the allowlist so later changes to the caller's slice cannot
	// alter a dialer that is already in use.
	policy := Policy{Allow: slices.Clone(p.Allow)}
	return &net.Dialer{
		Timeout:   timeout,
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			return policy.checkDial(network, address)
		},
	}
}

func (p Policy) checkDial(network, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// The runtime always passes a resolved ip:port; anything else is
		// refused rather than guessed at.
		return &BlockedError{Reason: fmt.Sprintf("cannot parse %s dial address %q", network, address)}
	}
	return p.Check(ap.Addr())
}

// ClientOptions tunes Client. Zero fields take the package defaults.
type ClientOptions struct {
	// ConnectTimeout bounds each TCP connect.
	ConnectTimeout time.Duration
	// Timeout bounds the whole exchange: connect, TLS, request, response
	// headers and reading the body.
	Timeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake.
	TLSHandshakeTimeout time.Duration
	// IdleConnTimeout closes pooled connections unused for this long.
	IdleConnTimeout time.Duration
	// MaxIdleConns caps pooled connections across all subscribers.
	MaxIdleConns int
	// MaxIdleConnsPerHost caps pooled connections per subscriber host.
	MaxIdleConnsPerHost int
	// MaxResponseHeaderBytes caps the response header size a subscriber
	// can make the dispatcher read.
	MaxResponseHeaderBytes int64
	// TLSClientConfig, when set, is cloned into the transport (custom
	// roots in tests or private PKI). Nil uses the system roots.
	TLSClientConfig *tls.Config
	// Resolver, when set, is used by the dialer for name resolution.
	Resolver *net.Resolver
}

func (o ClientOptions) withDefaults() ClientOptions {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.TLSHandshakeTimeout <= 0 {
		o.TLSHandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if o.MaxIdleConns <= 0 {
		o.MaxIdleConns = DefaultMaxIdleConns
	}
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if o.MaxResponseHeaderBytes <= 0 {
		o.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	return o
}

// Client returns an HTTP client for subscriber deliveries:
//
//   - every connection goes through Dialer, so the resolved address is
//     checked at dial time;
//   - Proxy is nil, because a proxy from HTTP_PROXY/HTTPS_PROXY would make
//     the dialer see only the proxy's address and the check would be
//     bypassed;
//   - redirects are never followed: the 3xx response is returned as is
//     (the dispatcher records it as a failed attempt), so a subscriber
//     cannot bounce the dispatcher into an internal address.
//
// A refused address surfaces as an error from Do that satisfies
// errors.As(err, new(*BlockedError)).
func (p Policy) Client(opts ClientOptions) *http.Client {
	o := opts.withDefaults()
	dialer := p.Dialer(o.ConnectTimeout)
	dialer.Resolver = o.Resolver
	var tlsConfig *tls.Config
	if o.TLSClientConfig != nil {
		tlsConfig = o.TLSClientConfig.Clone()
	}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    o.TLSHandshakeTimeout,
		IdleConnTimeout:        o.IdleConnTimeout,
		MaxIdleConns:           o.MaxIdleConns,
		MaxIdleConnsPerHost:    o.MaxIdleConnsPerHost,
		MaxResponseHeaderBytes: o.MaxResponseHeaderBytes,
		ExpectContinueTimeout:  time.Second,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
