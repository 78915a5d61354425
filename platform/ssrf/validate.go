package ssrf

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// MaxURLLength caps endpoint URLs. Real webhook URLs are far shorter; the
// cap keeps stored endpoints and log lines bounded.
const MaxURLLength = 2048

// maxHostnameLength is the DNS limit on a name in text form.
const maxHostnameLength = 253

// ValidateURL checks an endpoint URL at registration. It accepts only
// absolute http and https URLs with a host, no userinfo (credentials in
// URLs leak into logs and are sent to whoever the host resolves to) and a
// port in 1–65535.
//
// A host that is an IP literal is checked against the policy in every
// spelling a resolver might accept: bracketed IPv6 (including IPv4-mapped
// forms) and the legacy inet_aton IPv4 forms such as 2130706433, 0177.0.0.1,
// 0x7f.0.0.1 and 127.1. A host whose last label is numeric but which is not
// a valid IPv4 address is rejected outright, as browsers do, so it cannot
// reach a resolver that reads it differently. "localhost" and names under
// ".localhost" always mean loopback (RFC 6761) and are treated as
// 127.0.0.1. Any other hostname is accepted here; its addresses are checked
// when the dispatcher dials it.
//
// A refusal by the policy wraps a *BlockedError.
func (p Policy) ValidateURL(raw string) error {
	if raw == "" {
		return errors.New("endpoint URL is empty")
	}
	if len(raw) > MaxURLLength {
		return fmt.Errorf("endpoint URL is %d bytes, longer than the %d-byte limit", len(raw), MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// The parser's error quotes the whole URL; say why without it.
		if hasUserinfo(raw) {
			return fmt.Errorf("endpoint URL %q does not parse, and must not contain credentials (user:password@)", RedactURL(raw))
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("endpoint URL %q does not parse: %w", raw, err)
	}
	if hasUserinfo(raw) {
		return errors.New("endpoint URL must not contain credentials (user:password@); authenticate with the webhook signature instead")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("endpoint URL scheme %q is not allowed: use http or https", u.Scheme)
	}
	if u.Opaque != "" {
		return errors.New("endpoint URL must be absolute, like https://example.com/hook")
	}
	if u.User != nil {
		return errors.New("endpoint URL must not contain credentials (user:password@); authenticate with the webhook signature instead")
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("endpoint URL port %q is not in 1-65535", port)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return errors.New("endpoint URL has an empty port after ':'")
	}
	host := u.Hostname()
	if host == "" {
		return errors.New("endpoint URL has no host")
	}
	if err := p.checkHost(host); err != nil {
		return fmt.Errorf("endpoint URL host %q: %w", host, err)
	}
	return nil
}

func (p Policy) checkHost(host string) error {
	if strings.Contains(host, ":") {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("invalid IPv6 literal: %w", err)
		}
		return p.Check(ip)
	}
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			// IDNA mapping would turn look-alikes such as "127。0。0。1"
			// into an IP literal after this check; require the ASCII form.
			return errors.New("non-ASCII host: register the punycode (xn--) form")
		}
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "" {
		return errors.New("empty host")
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		return p.Check(ip)
	}
	if endsInNumber(name) {
		ip, err := parseLegacyIPv4(name)
		if err != nil {
			return fmt.Errorf("looks like an IPv4 address but is not a valid one: %w", err)
		}
		return p.Check(ip)
	}
	if err := checkHostname(name); err != nil {
		return err
	}
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return p.Check(netip.AddrFrom4([4]byte{127, 0, 0, 1}))
	}
	return nil
}

// checkHostname accepts DNS names made of letters, digits, hyphens and
// underscores (the latter appear in real service names), with non-empty
// labels of at most 63 bytes.
func checkHostname(name string) error {
	if len(name) > maxHostnameLength {
		return fmt.Errorf("hostname is longer than %d bytes", maxHostnameLength)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("hostname has an empty label")
		}
		if len(label) > 63 {
			return errors.New("hostname has a label longer than 63 bytes")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("hostname contains %q", c)
			}
		}
	}
	return nil
}

// endsInNumber reports whether the last label of name is a number in one of
// the forms inet_aton accepts. Such a name is never a usable DNS name (no
// top-level domain is numeric) but many resolvers read it as an address.
func endsInNumber(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	if isDigits(last) {
		return true
	}
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		return isHexDigits(last[2:])
	}
	return false
}

// parseLegacyIPv4 parses an IPv4 address with inet_aton semantics: one to
// four parts, each decimal, octal (leading 0) or hexadecimal (0x), where the
// last part fills all remaining bytes ("127.1" is 127.0.0.1, "2130706433"
// is 127.0.0.1). The standard library parses only the strict dotted-quad
// form, so these spellings must be decoded here or they would pass as
// hostnames.
func parseLegacyIPv4(name string) (netip.Addr, error) {
	parts := strings.Split(name, ".")
	if len(parts) > 4 {
		return netip.Addr{}, fmt.Errorf("%d parts, at most 4 allowed", len(parts))
	}
	nums := make([]uint64, len(parts))
	for i, part := range parts {
		n, err := parseIPv4Number(part)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("part %d %q: %w", i+1, part, err)
		}
		nums[i] = n
	}
	last := nums[len(nums)-1]
	lastBits := 8 * (5 - len(nums))
	if last >= 1<<lastBits {
		return netip.Addr{}, fmt.Errorf("last part %d does not fit in %d bits", last, lastBits)
	}
	value := last
	for i, n := range nums[:len(nums)-1] {
		if n > 255 {
			return netip.Addr{}, fmt.Errorf("part %d is %d, more than 255", i+1, n)
		}
		value |= n << (8 * (3 - i))
	}
	return netip.AddrFrom4([4]byte{byte(value >> 24), byte(value >> 16), byte(value >> 8), byte(value)}), nil
}

func parseIPv4Number(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty part")
	}
	base, digits := 10, s
	switch {
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, digits = 16, s[2:]
		if digits == "" {
			return 0, nil // inet_aton reads a bare "0x" as zero
		}
	case len(s) >= 2 && s[0] == '0':
		base, digits = 8, s[1:]
	}
	n, err := strconv.ParseUint(digits, base, 32)
	if err != nil {
		var numErr *strconv.NumError
		if errors.As(err, &numErr) && errors.Is(numErr.Err, strconv.ErrRange) {
			return 0, errors.New("number out of range")
		}
		return 0, fmt.Errorf("not a base-%d number", base)
	}
	return n, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isHexDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
