package ssrf

import "strings"

// RedactURL returns raw with the credentials of its authority (user:password@
// or token@) replaced by "xxxxx", for errors and logs. It works on the text,
// so a URL that does not parse is redacted too; everything else is kept as
// given.
func RedactURL(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	rest := raw[i+3:]
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
	return raw[:i+3] + redacted + rest[at:]
}

// hasUserinfo reports whether raw's authority holds credentials.
func hasUserinfo(raw string) bool { return RedactURL(raw) != raw }
