package ssrf

import "strings"

// RedactURL returns raw with the credentials of its authority (user:password@
// or token@) replaced by "xxxxx", for errors and logs. It works on the text,
// so a URL that does not parse is redacted too; everything else is kept as
// given.
func RedactURL(raw string) string {
	// Find the authority as url.Parse does: after an optional scheme, a
	// part starting with "//".
	start := 0
	if i := schemeEnd(raw); i > 0 {
		start = i + 1
	}
	if !strings.HasPrefix(raw[start:], "//") {
		return raw
	}
	start += 2
	rest := raw[start:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndexByte(rest[:end], '@')
	if at < 0 {
		return raw
	}
	redacted := "xxxxx"
	if user, _, ok := strings.Cut(rest[:at], ":"); ok {
		redacted = user + ":xxxxx"
	}
	return raw[:start] + redacted + rest[at:]
}

// schemeEnd returns the index of the ':' ending raw's scheme, or -1 when
// raw has none (the rules of url.Parse).
func schemeEnd(raw string) int {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.':
			if i == 0 {
				return -1
			}
		case c == ':':
			return i
		default:
			return -1
		}
	}
	return -1
}

// hasUserinfo reports whether raw's authority holds credentials.
func hasUserinfo(raw string) bool { return RedactURL(raw) != raw }
