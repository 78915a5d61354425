package ssrf_test

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/hookyard/hookyard/platform/ssrf"
)

// FuzzValidateURL feeds arbitrary endpoint URLs to ValidateURL. Whatever it
// accepts must be an absolute http(s) URL without credentials, and if its
// host is an IP literal the strict policy must allow that address.
func FuzzValidateURL(f *testing.F) {
	for _, tc := range refusedCases {
		f.Add(tc.url)
	}
	for _, s := range []string{
		"https://example.com/hook",
		"http://[2606:4700:4700::1111]:443/",
		"http://0x/",
		"http://0x7f.0x0.0x0.0x1/",
		"http://1.1.1.1.1/",
		"http://4294967295/",
		"http://4294967296/",
		"http://[::ffff:0.0.0.0]/",
		"http://%31%32%37.0.0.1/",
		"http://a.b.c.0x/",
	} {
		f.Add(s)
	}
	var policy ssrf.Policy
	f.Fuzz(func(t *testing.T, raw string) {
		err := policy.ValidateURL(raw)
		if err != nil {
			var blocked *ssrf.BlockedError
			if errors.As(err, &blocked) && blocked.Reason == "" {
				t.Fatalf("BlockedError without a reason for %q", raw)
			}
			return
		}
		u, perr := url.Parse(raw)
		if perr != nil {
			t.Fatalf("accepted %q which url.Parse rejects: %v", raw, perr)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("accepted scheme %q in %q", u.Scheme, raw)
		}
		if u.User != nil || u.Hostname() == "" {
			t.Fatalf("accepted %q with userinfo or without host", raw)
		}
		host := strings.TrimSuffix(u.Hostname(), ".")
		if ip, err := netip.ParseAddr(host); err == nil {
			if cerr := policy.Check(ip); cerr != nil {
				t.Fatalf("accepted %q whose address is refused: %v", raw, cerr)
			}
		}
		if strings.EqualFold(host, "localhost") {
			t.Fatalf("accepted localhost URL %q", raw)
		}
	})
}

// FuzzRedactURL: whatever the input, a password that url.Parse finds in it
// is not in the redacted form, nor is an error of ValidateURL.
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{
		"https://user:pw@example.com/a?b#c", "http://u:p@q@example.com", "https://token@h/",
		"http://u:s3cret@exa mple.com/", "http://a@b:c@d/e@f", "http://:@/", "x://@", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out := ssrf.RedactURL(raw)
		u, err := url.Parse(raw)
		if err != nil || u.User == nil {
			return
		}
		pw, ok := u.User.Password()
		if !ok || len(pw) < 4 || pw == "xxxxx" {
			return
		}
		if strings.Contains(out, ":"+pw+"@") {
			t.Fatalf("RedactURL(%q) = %q keeps the password", raw, out)
		}
		var p ssrf.Policy
		if err := p.ValidateURL(raw); err != nil && strings.Contains(err.Error(), ":"+pw+"@") {
			t.Fatalf("ValidateURL(%q) echoes the password: %v", raw, err)
		}
	})
}
