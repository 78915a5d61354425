package ssrf_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/ssrf"
)

// refusedCases are URLs that must never be delivered to. Every one is
// refused by ValidateURL; those marked dial are also sent through Client to
// show the dial-time check refuses them even if registration were skipped
// (the Control hook runs before connect, so nothing leaves the machine).
var refusedCases = []struct {
	name    string
	url     string
	dial    bool
	blocked bool // the refusal wraps *ssrf.BlockedError
}{
	{"decimal loopback", "http://2130706433/", false, true},
	{"octal loopback", "http://0177.0.0.1/", false, true},
	{"hex loopback dotted", "http://0x7f.0.0.1/", false, true},
	{"hex loopback whole", "http://0x7F000001/", false, true},
	{"short loopback", "http://127.1/", false, true},
	{"hex and short mixed", "http://0x7f.1/", false, true},
	{"octal metadata", "http://0251.0376.0251.0376/", false, true},
	{"decimal metadata", "http://2852039166/latest/meta-data/", false, true},
	{"zero shorthand", "http://0/", false, true},
	{"loopback dotted quad", "http://127.0.0.1:8080/", true, true},
	{"loopback trailing dot", "http://127.0.0.1./", false, true},
	{"unspecified v4", "http://0.0.0.0/", true, true},
	{"unspecified v6", "http://[::]/", true, true},
	{"loopback v6", "http://[::1]/", true, true},
	{"mapped loopback dotted", "http://[::ffff:127.0.0.1]/", true, true},
	{"mapped loopback hex", "http://[::ffff:7f00:1]/", true, true},
	{"mapped private", "http://[::ffff:10.0.0.1]/", true, true},
	{"ipv4-compatible loopback", "http://[::127.0.0.1]/", true, true},
	{"NAT64 loopback", "http://[64:ff9b::127.0.0.1]/", true, true},
	{"NAT64 metadata", "http://[64:ff9b::a9fe:a9fe]/", true, true},
	{"local-use NAT64", "http://[64:ff9b:1::a00:1]/", true, true},
	{"6to4 loopback", "http://[2002:7f00:1::1]/", true, true},
	{"6to4 metadata", "http://[2002:a9fe:a9fe::]/", true, true},
	{"Teredo", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", true, true},
	{"private 10/8", "http://10.0.0.1/", true, true},
	{"private 172.16/12 low", "http://172.16.0.1/", true, true},
	{"private 172.16/12 high", "http://172.31.255.254/", true, true},
	{"private 192.168/16", "http://192.168.1.1/", true, true},
	{"CGNAT", "http://100.64.0.1/", true, true},
	{"AWS/GCP/Azure metadata", "http://169.254.169.254/latest/meta-data/", true, true},
	{"AWS IPv6 metadata", "http://[fd00:ec2::254]/", true, true},
	{"Alibaba metadata", "http://100.100.100.200/", true, true},
	{"Oracle metadata (IETF 192.0.0/24)", "http://192.0.0.192/", true, true},
	{"link-local v4", "http://169.254.1.1/", true, true},
	{"link-local v6", "http://[fe80::1]/", true, true},
	{"link-local v6 with zone", "http://[fe80::1%25eth0]/", false, true},
	{"ULA", "http://[fc00::1]/", true, true},
	{"site-local", "http://[fec0::1]/", true, true},
	{"multicast v4", "http://224.0.0.1/", true, true},
	{"multicast v6", "http://[ff02::1]/", true, true},
	{"broadcast", "http://255.255.255.255/", true, true},
	{"reserved class E", "http://240.0.0.1/", true, true},
	{"benchmarking", "http://198.18.0.1/", true, true},
	{"TEST-NET-1", "http://192.0.2.1/", true, true},
	{"TEST-NET-2", "http://198.51.100.7/", true, true},
	{"TEST-NET-3", "http://203.0.113.9/", true, true},
	{"documentation v6", "http://[2001:db8::1]/", true, true},
	{"localhost", "http://localhost/", false, true},
	{"localhost uppercase trailing dot", "http://LOCALHOST./", false, true},
	{"subdomain of localhost", "http://api.localhost:9000/", false, true},
	{"ideographic dots", "http://127\u30020\u30020\u30021/", false, false},
	{"numeric last label not an address", "http://1.2.3.256/", false, false},
	{"invalid octal", "http://08.0.0.1/", false, false},
}

func TestRefusedURLs(t *testing.T) {
	if len(refusedCases) < 30 {
		t.Fatalf("only %d cases", len(refusedCases))
	}
	var policy ssrf.Policy
	client := policy.Client(ssrf.ClientOptions{ConnectTimeout: time.Second, Timeout: 2 * time.Second})
	for _, tc := range refusedCases {
		t.Run(tc.name, func(t *testing.T) {
			err := policy.ValidateURL(tc.url)
			if err == nil {
				t.Fatalf("ValidateURL(%q) accepted a refused URL", tc.url)
			}
			var blocked *ssrf.BlockedError
			if got := errors.As(err, &blocked); got != tc.blocked {
				t.Fatalf("ValidateURL(%q) = %v; BlockedError = %v, want %v", tc.url, err, got, tc.blocked)
			}
			if !tc.dial {
				return
			}
			resp, err := client.Get(tc.url)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("client reached %q", tc.url)
			}
			if !errors.As(err, &blocked) {
				t.Fatalf("client error for %q is not a BlockedError: %v", tc.url, err)
			}
		})
	}
}

func TestCheckAllowsPublicAddresses(t *testing.T) {
	var policy ssrf.Policy
	for _, s := range []string{
		"8.8.8.8",
		"1.1.1.1",
		"93.184.215.14",
		"2606:4700:4700::1111",
		"2a00:1450:4001:80b::200e",
		"::ffff:8.8.8.8",   // mapped public
		"64:ff9b::808:808", // NAT64 of a public address
		"2002:808:808::1",  // 6to4 of a public address
		"172.32.0.1",       // just outside 172.16/12
		"100.128.0.1",      // just outside 100.64/10
		"198.20.0.1",       // just outside 198.18/15
		"2001:4860:4860::8888",
	} {
		if err := policy.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("Check(%s) = %v, want allowed", s, err)
		}
	}
}

func TestCheckReasons(t *testing.T) {
	var policy ssrf.Policy
	for addr, want := range map[string]string{
		"169.254.169.254":  "metadata",
		"fd00:ec2::254":    "metadata",
		"100.100.100.200":  "metadata",
		"127.0.0.2":        "loopback",
		"::ffff:10.1.1.1":  "IPv4-mapped",
		"64:ff9b::7f00:1":  "NAT64",
		"2002:c0a8:101::1": "6to4",
		"100.64.1.1":       "CGNAT",
		"fe80::1%eth0":     "link-local",
		"::8.8.8.8":        "IPv4-compatible",
		"4000::1":          "outside IPv6 global unicast",
		"255.255.255.255":  "broadcast",
	} {
		err := policy.Check(netip.MustParseAddr(addr))
		var blocked *ssrf.BlockedError
		if !errors.As(err, &blocked) {
			t.Errorf("Check(%s) = %v, want BlockedError", addr, err)
			continue
		}
		if !strings.Contains(blocked.Reason, want) {
			t.Errorf("Check(%s) reason %q, want it to mention %q", addr, blocked.Reason, want)
		}
		if blocked.Addr != netip.MustParseAddr(addr) {
			t.Errorf("Check(%s) reported address %s", addr, blocked.Addr)
		}
	}
	if err := policy.Check(netip.Addr{}); err == nil {
		t.Error("Check(zero Addr) allowed an invalid address")
	}
}

func TestCheckAllowlist(t *testing.T) {
	allow, err := ssrf.ParseCIDRs("127.0.0.0/8, fd00::/8, ::ffff:10.0.0.0/104")
	if err != nil {
		t.Fatal(err)
	}
	policy := ssrf.Policy{Allow: allow}
	// The mapped prefix written directly (not through ParseCIDRs) must
	// behave the same.
	direct := ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}}
	for _, tc := range []struct {
		policy  ssrf.Policy
		addr    string
		allowed bool
	}{
		{policy, "127.0.0.1", true},
		{policy, "127.9.9.9", true},
		{policy, "::ffff:127.0.0.1", true}, // unmapped form is allowlisted
		{policy, "fd00::1", true},
		{policy, "10.1.2.3", true}, // mapped allow prefix matches the IPv4 form
		{direct, "10.1.2.3", true},
		{direct, "::ffff:10.1.2.3", true},
		{policy, "::1", false},
		{policy, "192.168.0.1", false},
		{policy, "169.254.169.254", false},
		{policy, "64:ff9b::7f00:1", false}, // embedded forms need their own entry
		{policy, "2002:7f00:1::", false},
	} {
		err := tc.policy.Check(netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.allowed {
			t.Errorf("Check(%s) with %v = %v, want allowed=%v", tc.addr, tc.policy.Allow, err, tc.allowed)
		}
	}
}

func TestParseCIDRs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "   ", want: nil},
		{in: "127.0.0.0/8", want: []string{"127.0.0.0/8"}},
		{in: " 10.1.2.3/8 , fd00::/8 ", want: []string{"10.0.0.0/8", "fd00::/8"}},
		{in: "192.168.1.10", want: []string{"192.168.1.10/32"}},
		{in: "::1", want: []string{"::1/128"}},
		{in: "::ffff:10.0.0.0/104", want: []string{"10.0.0.0/8"}},
		{in: "10.0.0.0/8,", wantErr: "entry 2 is empty"},
		{in: "10.0.0.0/33", wantErr: `entry 1 "10.0.0.0/33"`},
		{in: "10.0.0.0/8,example.com", wantErr: `entry 2 "example.com" is neither`},
		{in: "fe80::1%eth0", wantErr: "zoned"},
		{in: "10.0.0.0/8/8", wantErr: "not a CIDR prefix"},
	} {
		got, err := ssrf.ParseCIDRs(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseCIDRs(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseCIDRs(%q): %v", tc.in, err)
			continue
		}
		var gotStr []string
		for _, p := range got {
			gotStr = append(gotStr, p.String())
		}
		if strings.Join(gotStr, " ") != strings.Join(tc.want, " ") {
			t.Errorf("ParseCIDRs(%q) = %v, want %v", tc.in, gotStr, tc.want)
		}
	}
}

func TestValidateURLAccepts(t *testing.T) {
	var strict ssrf.Policy
	for _, u := range []string{
		"https://example.com/hook",
		"http://example.com:8080/path?x=1",
		"HTTPS://Example.COM/",
		"https://hooks.example.com./trailing-dot",
		"https://xn--bcher-kva.example/",
		"https://my_service.example.com/",
		"http://8.8.8.8/",
		"http://[2606:4700:4700::1111]:443/",
		"http://1.2.3.example/", // numeric labels are fine when the last one is not
	} {
		if err := strict.ValidateURL(u); err != nil {
			t.Errorf("ValidateURL(%q) = %v, want accepted", u, err)
		}
	}
	dev := ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	for _, u := range []string{"http://127.0.0.1:1234/hook", "http://localhost:1234/", "http://2130706433/"} {
		if err := dev.ValidateURL(u); err != nil {
			t.Errorf("with 127.0.0.0/8 allowed, ValidateURL(%q) = %v", u, err)
		}
	}
}

func TestValidateURLRejectsMalformed(t *testing.T) {
	var policy ssrf.Policy
	for _, tc := range []struct{ url, want string }{
		{"", "empty"},
		{"https://example.com/" + strings.Repeat("a", ssrf.MaxURLLength), "limit"},
		{"ftp://example.com/", "scheme"},
		{"javascript:alert(1)", "scheme"},
		{"example.com/hook", "scheme"},
		{"//example.com/hook", "scheme"},
		{"http:example.com", "absolute"},
		{"http:///path", "no host"},
		{"https://user:pass@example.com/", "credentials"},
		{"https://user@example.com/", "credentials"},
		{"http://example.com:0/", "port"},
		{"http://example.com:65536/", "port"},
		{"http://example.com:99999999999999999999/", "port"},
		{"http://example.com:/", "empty port"},
		{"http://exa mple.com/", "parse"},
		{"http://example..com/", "empty label"},
		{"http://example.123/", "IPv4"},
		{"http://" + strings.Repeat("a", 64) + ".com/", "63"},
		{"http://ex!ample.com/", "hostname contains"},
		{"http://bücher.example/", "punycode"},
		{"http://[::1/", "parse"},
	} {
		err := policy.ValidateURL(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidateURL(%q) = %v, want error mentioning %q", tc.url, err, tc.want)
		}
	}
}

func TestDialerControlChecksEveryAddress(t *testing.T) {
	d := ssrf.Policy{}.Dialer(time.Second)
	if d.Timeout != time.Second {
		t.Errorf("dialer timeout %v", d.Timeout)
	}
	for _, tc := range []struct {
		network, address string
		allowed          bool
	}{
		{"tcp4", "10.0.0.1:443", false},
		{"tcp6", "[::1]:443", false},
		{"tcp6", "[::ffff:127.0.0.1]:80", false},
		{"tcp6", "[fe80::1%eth0]:80", false},
		{"tcp4", "8.8.8.8:443", true},
		{"tcp6", "[2606:4700:4700::1111]:443", true},
		{"tcp", "not-an-address", false},
	} {
		err := d.Control(tc.network, tc.address, nil)
		if (err == nil) != tc.allowed {
			t.Errorf("Control(%s, %s) = %v, want allowed=%v", tc.network, tc.address, err, tc.allowed)
		}
		var blocked *ssrf.BlockedError
		if err != nil && !errors.As(err, &blocked) {
			t.Errorf("Control(%s, %s) error %v is not a BlockedError", tc.network, tc.address, err)
		}
	}
}

// countingServer starts an httptest server on 127.0.0.1 that answers 200
// and counts requests.
func countingServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	if ap := netip.MustParseAddrPort(srv.Listener.Addr().String()); !ap.Addr().IsLoopback() {
		t.Fatalf("test server is not on loopback: %s", ap)
	}
	return srv, &hits
}

// withHost returns rawURL with its host replaced, keeping the port.
func withHost(t *testing.T, rawURL, host string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = net.JoinHostPort(host, u.Port())
	return u.String()
}

// fakeDNS answers every A query with addr and every other query with no
// records, standing in for an attacker's name server that points a public
// looking name at an internal address.
func fakeDNS(t *testing.T, addr netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:n], addr); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}
	}()
	server := pc.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp4", server)
		},
	}
}

// dnsAnswer builds a minimal response to a single-question DNS query.
func dnsAnswer(query []byte, addr netip.Addr) []byte {
	if len(query) < 12 || binary.BigEndian.Uint16(query[4:6]) != 1 {
		return nil
	}
	i := 12
	for i < len(query) && query[i] != 0 {
		i += int(query[i]) + 1
	}
	if i+5 > len(query) {
		return nil
	}
	question := query[12 : i+5]
	qtype := binary.BigEndian.Uint16(query[i+1 : i+3])
	resp := make([]byte, 12, 64)
	copy(resp, query[:2])                        // id
	binary.BigEndian.PutUint16(resp[2:], 0x8580) // response, authoritative, RD, RA
	binary.BigEndian.PutUint16(resp[4:], 1)      // one question
	resp = append(resp, question...)
	if qtype == 1 { // A
		binary.BigEndian.PutUint16(resp[6:], 1)
		a := addr.As4()
		resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		resp = append(resp, a[:]...)
	}
	return resp
}

func TestClientRefusesLoopbackServer(t *testing.T) {
	srv, hits := countingServer(t)
	client := ssrf.Policy{}.Client(ssrf.ClientOptions{
		Resolver: fakeDNS(t, netip.MustParseAddr("127.0.0.1")),
	})
	for _, target := range []string{
		srv.URL,                                // literal 127.0.0.1
		withHost(t, srv.URL, "localhost"),      // resolved from /etc/hosts
		withHost(t, srv.URL, "rebind.example"), // attacker DNS says 127.0.0.1
	} {
		resp, err := client.Get(target)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET %s succeeded with status %d", target, resp.StatusCode)
		}
		var blocked *ssrf.BlockedError
		if !errors.As(err, &blocked) {
			t.Fatalf("GET %s: error %v is not a BlockedError", target, err)
		}
		if !blocked.Addr.IsLoopback() {
			t.Errorf("GET %s: blocked address %s, want loopback", target, blocked.Addr)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("loopback server received %d requests", n)
	}
}

func TestClientReachesAllowlistedServer(t *testing.T) {
	srv, hits := countingServer(t)
	policy := ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	client := policy.Client(ssrf.ClientOptions{
		Resolver: fakeDNS(t, netip.MustParseAddr("127.0.0.1")),
	})
	for _, target := range []string{srv.URL, withHost(t, srv.URL, "rebind.example")} {
		resp, err := client.Get(target)
		if err != nil {
			t.Fatalf("GET %s: %v", target, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", target, resp.StatusCode)
		}
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("server received %d requests, want 2", n)
	}
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	internal, internalHits := countingServer(t)
	for _, tc := range []struct {
		name     string
		location string
		status   int
	}{
		{"to metadata", "http://169.254.169.254/latest/meta-data/", http.StatusFound},
		{"to loopback", internal.URL + "/admin", http.StatusFound},
		{"307 to loopback", internal.URL + "/admin", http.StatusTemporaryRedirect},
		{"308 to metadata", "http://169.254.169.254/", http.StatusPermanentRedirect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, tc.location, tc.status)
			}))
			defer redirector.Close()
			// The redirector itself is on loopback, so it must be
			// allowlisted to be reached; the redirect target would be
			// reachable too, which shows that not following is what
			// protects it.
			policy := ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
			resp, err := policy.Client(ssrf.ClientOptions{}).Post(redirector.URL, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (the redirect itself)", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("Location"); got != tc.location {
				t.Fatalf("Location %q, want %q", got, tc.location)
			}
		})
	}
	if n := internalHits.Load(); n != 0 {
		t.Fatalf("redirect target received %d requests", n)
	}
}

func TestClientIgnoresProxyEnvironment(t *testing.T) {
	target, targetHits := countingServer(t)
	proxy, proxyHits := countingServer(t)
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("http_proxy", proxy.URL)
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	policy := ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	resp, err := policy.Client(ssrf.ClientOptions{}).Get(target.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if proxyHits.Load() != 0 || targetHits.Load() != 1 {
		t.Fatalf("proxy hits %d, target hits %d: the environment proxy was used", proxyHits.Load(), targetHits.Load())
	}
}

func TestClientDefaults(t *testing.T) {
	c := ssrf.Policy{}.Client(ssrf.ClientOptions{})
	if c.Timeout != ssrf.DefaultTimeout {
		t.Errorf("timeout %v", c.Timeout)
	}
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport %T", c.Transport)
	}
	if tr.Proxy != nil {
		t.Error("transport has a proxy function")
	}
	if tr.TLSHandshakeTimeout != ssrf.DefaultTLSHandshakeTimeout || tr.MaxIdleConnsPerHost != ssrf.DefaultMaxIdleConnsPerHost {
		t.Errorf("transport limits not applied: %+v", tr)
	}
	if c.CheckRedirect == nil || c.CheckRedirect(nil, nil) != http.ErrUseLastResponse {
		t.Error("redirects would be followed")
	}
}

func TestClientRefusesBeforeConnecting(t *testing.T) {
	// A refused address fails immediately, before any connect attempt, so
	// it never waits for the connect timeout.
	client := ssrf.Policy{}.Client(ssrf.ClientOptions{ConnectTimeout: 10 * time.Second})
	start := time.Now()
	_, err := client.Get("http://10.255.255.1/")
	var blocked *ssrf.BlockedError
	if !errors.As(err, &blocked) {
		t.Fatalf("error %v is not a BlockedError", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refusal took %v", d)
	}
}

// A URL that is refused never has its credentials echoed: the error goes
// to the caller and into the log.
func TestValidateURLDoesNotEchoCredentials(t *testing.T) {
	var policy ssrf.Policy
	for _, raw := range []string{
		"http://user:s3cretpass@exa mple.com/",
		"http://user:s3cretpass@[::1/",
		"http://user:s3cretpass@example.com:bad/",
		"http://user:s3cre%zzpass@example.com/",
		"http://user:s3cretpass@example.com/%zz",
		"http://user:s3cretpass@example.com/\x7f",
		"ftp://user:s3cretpass@example.com/",
		"https://user:s3cretpass@example.com/",
		"https://s3cretpass@example.com/",
	} {
		err := policy.ValidateURL(raw)
		if err == nil {
			t.Errorf("ValidateURL(%q) accepted", raw)
			continue
		}
		if strings.Contains(err.Error(), "s3cre") {
			t.Errorf("ValidateURL(%q) echoes the password: %v", raw, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://user:pw@example.com/a?b#c": "https://user:xxxxx@example.com/a?b#c",
		"https://token@example.com/":        "https://xxxxx@example.com/",
		"https://example.com/a@b":           "https://example.com/a@b",
		"http://u:p@exa mple.com/":          "http://u:xxxxx@exa mple.com/",
		"http://u:p@q@example.com":          "http://u:xxxxx@example.com",
		"not a url":                         "not a url",
		"":                                  "",
	} {
		if got := ssrf.RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}
