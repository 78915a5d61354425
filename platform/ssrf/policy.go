// Package ssrf keeps the dispatcher's outbound HTTP from being turned
// against the network it runs in.
//
// Subscribers choose the URLs the dispatcher calls, so a URL is untrusted
// input. Checking it once at registration is not enough: a hostname can
// resolve to a public address when it is registered and to 127.0.0.1 or a
// cloud metadata service when it is called (DNS rebinding). The decisive
// check therefore happens in the dialer's Control hook, on the exact
// address the socket is about to connect to, after resolution. ValidateURL
// adds an early, friendlier refusal at registration for URLs whose host is
// already a literal address.
package ssrf

import (
	"fmt"
	"net/netip"
	"strings"
)

// BlockedError reports that an address was refused by the policy. Callers
// detect it with errors.As to record the attempt as "blocked" rather than
// as an ordinary connection failure.
type BlockedError struct {
	// Addr is the refused address as it was seen (for example the
	// IPv4-mapped form when that is what was dialed). It is the zero Addr
	// when the dial address could not be parsed at all.
	Addr netip.Addr
	// Reason says which range the address falls in.
	Reason string
}

func (e *BlockedError) Error() string {
	if !e.Addr.IsValid() {
		return "ssrf: address refused: " + e.Reason
	}
	return fmt.Sprintf("ssrf: address %s refused: %s", e.Addr, e.Reason)
}

// Policy decides which addresses outbound HTTP may reach. The zero Policy
// refuses every non-public address.
type Policy struct {
	// Allow lists prefixes that may be reached although they fall in a
	// refused range (HOOKYARD_ALLOW_CIDRS; development and tests). An
	// address is allowed when a prefix contains it or its unmapped IPv4
	// form.
	Allow []netip.Prefix
}

// ParseCIDRs parses a comma-separated list of prefixes such as the value of
// HOOKYARD_ALLOW_CIDRS. Spaces around entries are ignored, a bare address
// means that single host, and host bits are cleared ("10.1.2.3/8" becomes
// "10.0.0.0/8"). An empty string yields no prefixes. IPv4-mapped IPv6
// prefixes ("::ffff:10.0.0.0/104") are stored as their IPv4 equivalent so
// they match however the address is later spelled.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	entries := strings.Split(s, ",")
	prefixes := make([]netip.Prefix, 0, len(entries))
	for i, raw := range entries {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			return nil, fmt.Errorf("allow CIDRs: entry %d is empty (stray comma?)", i+1)
		}
		var pfx netip.Prefix
		if strings.Contains(entry, "/") {
			p, err := netip.ParsePrefix(entry)
			if err != nil {
				return nil, fmt.Errorf("allow CIDRs: entry %d %q is not a CIDR prefix like 10.0.0.0/8 or fd00::/8: %w", i+1, entry, err)
			}
			pfx = p
		} else {
			a, err := netip.ParseAddr(entry)
			if err != nil {
				return nil, fmt.Errorf("allow CIDRs: entry %d %q is neither a CIDR prefix nor an IP address: %w", i+1, entry, err)
			}
			if a.Zone() != "" {
				return nil, fmt.Errorf("allow CIDRs: entry %d %q: zoned addresses are not supported", i+1, entry)
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		prefixes = append(prefixes, unmapPrefix(pfx.Masked()))
	}
	return prefixes, nil
}

// unmapPrefix turns an IPv4-mapped IPv6 prefix of length 96 or more into the
// equivalent IPv4 prefix; any other prefix is returned unchanged.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// Check returns nil when ip may be reached and a *BlockedError otherwise.
// The allowlist is consulted first, against ip and against its unmapped
// IPv4 form. Addresses that embed an IPv4 address (NAT64, 6to4,
// IPv4-compatible) are judged by the embedded address; the allowlist
// applies to such an address only if it lists the IPv6 form itself, so
// allowing 127.0.0.0/8 does not open 64:ff9b::7f00:1 as a side effect.
func (p Policy) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return &BlockedError{Addr: ip, Reason: "invalid address"}
	}
	if p.allows(ip) {
		return nil
	}
	if reason, refused := refusal(ip.WithZone("")); refused {
		return &BlockedError{Addr: ip, Reason: reason}
	}
	return nil
}

func (p Policy) allows(ip netip.Addr) bool {
	ip = ip.WithZone("")
	plain := ip.Unmap()
	for _, pfx := range p.Allow {
		if pfx.Contains(ip) || pfx.Contains(plain) {
			return true
		}
		if u := unmapPrefix(pfx); u != pfx && u.Contains(plain) {
			return true
		}
	}
	return false
}

type rangeRule struct {
	prefix netip.Prefix
	reason string
}

// rules builds a lookup table from prefix/reason pairs.
func rules(specs ...string) []rangeRule {
	out := make([]rangeRule, 0, len(specs)/2)
	for i := 0; i < len(specs); i += 2 {
		out = append(out, rangeRule{prefix: netip.MustParsePrefix(specs[i]), reason: specs[i+1]})
	}
	return out
}

// The lookup tables below are filled once at package initialisation and
// only ever read.

// ipv4Rules lists refused IPv4 ranges, most specific first so the reason
// names the most useful range (metadata before link-local, broadcast before
// reserved).
var ipv4Rules = rules(
	"169.254.169.254/32", "cloud metadata service",
	"100.100.100.200/32", "cloud metadata service (Alibaba Cloud)",
	"168.63.129.16/32", "cloud platform service (Azure WireServer)",
	"255.255.255.255/32", "broadcast",
	"0.0.0.0/8", "unspecified (\"this network\")",
	"10.0.0.0/8", "private network (RFC 1918)",
	"100.64.0.0/10", "shared address space (CGNAT, RFC 6598)",
	"127.0.0.0/8", "loopback",
	"169.254.0.0/16", "link-local",
	"172.16.0.0/12", "private network (RFC 1918)",
	"192.0.0.0/24", "IETF protocol assignments",
	"192.0.2.0/24", "documentation (TEST-NET-1)",
	"192.88.99.0/24", "6to4 relay anycast (deprecated)",
	"192.168.0.0/16", "private network (RFC 1918)",
	"198.18.0.0/15", "benchmarking (RFC 2544)",
	"198.51.100.0/24", "documentation (TEST-NET-2)",
	"203.0.113.0/24", "documentation (TEST-NET-3)",
	"224.0.0.0/4", "multicast",
	"240.0.0.0/4", "reserved (class E)",
)

// ipv6Rules lists refused IPv6 ranges that do not embed an IPv4 address.
// Anything outside 2000::/3 that is not listed here and not an embedding
// form is refused as well (see refusedIPv6).
var ipv6Rules = rules(
	"fd00:ec2::254/128", "cloud metadata service (AWS)",
	"::/128", "unspecified",
	"::1/128", "loopback",
	"100::/64", "discard-only (RFC 6666)",
	"2001::/32", "Teredo tunnel (can reach arbitrary IPv4 hosts)",
	"2001:2::/48", "benchmarking (RFC 5180)",
	"2001:10::/28", "ORCHID (non-routable)",
	"2001:20::/28", "ORCHIDv2 (non-routable)",
	"2001:db8::/32", "documentation",
	"3fff::/20", "documentation",
	"5f00::/16", "SRv6 segment identifiers",
	"fc00::/7", "unique local address (private IPv6)",
	"fe80::/10", "link-local",
	"fec0::/10", "site-local (deprecated)",
	"ff00::/8", "multicast",
)

var (
	prefixMapped     = netip.MustParsePrefix("::ffff:0:0/96")
	prefixCompat     = netip.MustParsePrefix("::/96")
	prefixNAT64      = netip.MustParsePrefix("64:ff9b::/96")
	prefixNAT64Loc   = netip.MustParsePrefix("64:ff9b:1::/48")
	prefix6to4       = netip.MustParsePrefix("2002::/16")
	prefixGlobalV6   = netip.MustParsePrefix("2000::/3")
	prefixUnspecV6   = netip.MustParsePrefix("::/128")
	prefixLoopbackV6 = netip.MustParsePrefix("::1/128")
)

// refusal reports whether ip (without zone) falls in a refused range and
// why. It ignores the allowlist.
func refusal(ip netip.Addr) (string, bool) {
	if ip.Is4() {
		return refusedIPv4(ip)
	}
	return refusedIPv6(ip)
}

func refusedIPv4(ip netip.Addr) (string, bool) {
	for _, r := range ipv4Rules {
		if r.prefix.Contains(ip) {
			return r.reason, true
		}
	}
	return "", false
}

func refusedIPv6(ip netip.Addr) (string, bool) {
	b := ip.As16()
	embedded := func(kind string, v4 netip.Addr) (string, bool) {
		if reason, refused := refusedIPv4(v4); refused {
			return fmt.Sprintf("%s address embedding %s: %s", kind, v4, reason), true
		}
		return "", false
	}
	switch {
	case prefixMapped.Contains(ip):
		// The kernel connects ::ffff:a.b.c.d to a.b.c.d over IPv4.
		return embedded("IPv4-mapped", ip.Unmap())
	case prefixUnspecV6.Contains(ip):
		return "unspecified", true
	case prefixLoopbackV6.Contains(ip):
		return "loopback", true
	case prefixCompat.Contains(ip):
		// Deprecated by RFC 4291; no legitimate subscriber uses it, and
		// some stacks still tunnel it to the embedded IPv4 address.
		if reason, refused := embedded("IPv4-compatible", netip.AddrFrom4([4]byte(b[12:16]))); refused {
			return reason, true
		}
		return "IPv4-compatible address (deprecated)", true
	case prefixNAT64.Contains(ip):
		// A NAT64 gateway forwards to the embedded IPv4 address, which is
		// what really gets reached; public ones are legitimate.
		return embedded("NAT64", netip.AddrFrom4([4]byte(b[12:16])))
	case prefixNAT64Loc.Contains(ip):
		// The local-use prefix lets each network choose where the IPv4
		// address sits, so it cannot be decoded reliably; it is private by
		// definition (RFC 8215).
		if reason, refused := embedded("local-use NAT64", netip.AddrFrom4([4]byte(b[12:16]))); refused {
			return reason, true
		}
		return "local-use NAT64 prefix (RFC 8215)", true
	case prefix6to4.Contains(ip):
		return embedded("6to4", netip.AddrFrom4([4]byte(b[2:6])))
	}
	for _, r := range ipv6Rules {
		if r.prefix.Contains(ip) {
			return r.reason, true
		}
	}
	if !prefixGlobalV6.Contains(ip) {
		return "reserved (outside IPv6 global unicast space)", true
	}
	return "", false
}
