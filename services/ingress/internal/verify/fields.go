package verify

import (
	"bytes"
	"encoding/json"
	"unicode"
	"unicode/utf8"
)

// jsonFields reads the top-level members named names of a JSON body into
// out (out[i] for names[i]) exactly as decodeJSON would into a struct of
// jsonText fields tagged with those names: the same values, the same
// errors. It costs one validating pass and a scan that skips nested values
// without decoding them, where json.Unmarshal decodes the whole body by
// reflection (most of a webhook's parsing time). names must be ASCII and
// must not fold to one another.
func jsonFields(body []byte, names []string, out []string) *Error {
	for i := range out {
		out[i] = ""
	}
	if !validJSON(body) {
		return errMalformed("JSON body")
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		// Another kind of value: json.Unmarshal reports a type error,
		// which decodeJSON ignores, and sets nothing.
		return nil
	}
	i = skipSpace(body, i+1)
	for body[i] != '}' {
		keyEnd := skipString(body, i)
		key := body[i:keyEnd]
		i = skipSpace(body, keyEnd)
		i = skipSpace(body, i+1) // the ':'
		valEnd := skipValue(body, i)
		if n := matchName(key, names); n >= 0 {
			if v, ok := textValue(body[i:valEnd]); ok {
				out[n] = v
			}
		}
		i = skipSpace(body, valEnd)
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string starting at b[i] ('"').
// b is valid JSON.
func skipString(b []byte, i int) int {
	i++
	for {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b)
		}
		q += i
		// The quote ends the string unless an odd number of backslashes
		// precede it.
		n := 0
		for j := q - 1; j >= i && b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		i = q + 1
	}
}

// skipValue returns the index after the value starting at b[i]. b is
// valid JSON.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	// A number or a literal.
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}

// plain reports whether a JSON string's bytes (quotes included) read as
// they are: no escapes and nothing outside ASCII.
func plain(s []byte) bool {
	for _, c := range s {
		if c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// matchName returns the index of the name a member key stands for, as
// encoding/json matches keys to field tags: exactly or else folding case,
// after unescaping. -1 if none.
func matchName(key []byte, names []string) int {
	k := key[1 : len(key)-1]
	if !plain(key) {
		var s string
		if json.Unmarshal(key, &s) != nil {
			return -1
		}
		k = []byte(s)
	}
	for n, name := range names {
		if foldEqual(k, name) {
			return n
		}
	}
	return -1
}

// foldEqual reports whether key and the ASCII name fold to the same
// name, by encoding/json's rule: ASCII letters by case, other runes to the
// least rune of their fold orbit (so that the Kelvin sign matches "k").
func foldEqual(key []byte, name string) bool {
	j := 0
	for i := 0; i < len(key); {
		if j >= len(name) {
			return false
		}
		c := key[i]
		if c < utf8.RuneSelf {
			i++
		} else {
			r, size := utf8.DecodeRune(key[i:])
			i += size
			r = leastFold(r)
			if r >= utf8.RuneSelf {
				return false
			}
			c = byte(r)
		}
		if upper(c) != upper(name[j]) {
			return false
		}
		j++
	}
	return j == len(name)
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// leastFold is the least rune of r's case-fold orbit.
func leastFold(r rune) rune {
	least := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	return least
}

// textValue is what jsonText makes of a member's value: a string's
// text, a number's digits as written; ok is false for other values, which
// leave the field as it was.
func textValue(v []byte) (string, bool) {
	switch {
	case v[0] == '"':
		if plain(v) {
			return string(v[1 : len(v)-1]), true
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", false
		}
		return s, true
	case v[0] == '-' || (v[0] >= '0' && v[0] <= '9'):
		return string(v), true
	}
	return "", false
}

// maxDepth is encoding/json's limit on nesting; deeper is a syntax error.
const maxDepth = 10000

// validJSON reports whether b is one JSON value, as json.Valid does, in a
// single pass that runs through string contents a byte at a time without
// a state machine call per byte.
func validJSON(b []byte) bool {
	i, ok := validValue(b, skipSpace(b, 0), 0)
	return ok && skipSpace(b, i) == len(b)
}

// validValue checks the value at b[i], nested depth deep, and returns the
// index after it.
func validValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '{' || c == '[':
		if depth+1 > maxDepth {
			return i, false
		}
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == end {
			return i + 1, true
		}
		for {
			var ok bool
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return i, false
				}
				if i, ok = validString(b, i); !ok {
					return i, false
				}
				i = skipSpace(b, i)
				if i >= len(b) || b[i] != ':' {
					return i, false
				}
				i = skipSpace(b, i+1)
			}
			if i, ok = validValue(b, i, depth+1); !ok {
				return i, false
			}
			i = skipSpace(b, i)
			switch {
			case i >= len(b):
				return i, false
			case b[i] == end:
				return i + 1, true
			case b[i] != ',':
				return i, false
			}
			i = skipSpace(b, i+1)
		}
	case c == '"':
		return validString(b, i)
	case c == '-' || ('0' <= c && c <= '9'):
		return validNumber(b, i)
	case c == 't':
		return validLiteral(b, i, "true")
	case c == 'f':
		return validLiteral(b, i, "false")
	case c == 'n':
		return validLiteral(b, i, "null")
	}
	return i, false
}

func validLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// validString checks the string at b[i] ('"'): no control characters,
// only JSON's escapes. Bytes outside ASCII are not checked, as
// encoding/json does not check them.
func validString(b []byte, i int) (int, bool) {
	for i++; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			i++
			if i >= len(b) {
				return i, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if len(b)-i <= 4 {
					return i, false
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return i, false
					}
				}
				i += 5
			default:
				return i, false
			}
		case c < 0x20:
			return i, false
		default:
			i++
		}
	}
	return i, false
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// validNumber checks JSON's number grammar:
// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		if i >= len(b) || !isDigit(b[i]) {
			return false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		return true
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return i, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return i, false
		}
	}
	return i, true
}
