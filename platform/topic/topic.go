// Package topic matches AMQP topic patterns against routing keys the way
// the broker does: words are separated by dots, "*" matches exactly one
// word and "#" zero or more. The dispatcher (endpoint event types), the
// cache (invalidation rules) and jobs (triggers) all match with it, so a
// pattern means the same everywhere, and a queue binding too.
package topic

import (
	"fmt"
	"strings"
)

// Match reports whether routingKey matches the AMQP topic pattern: words are
// separated by dots, "*" matches exactly one word and "#" zero or more. The
// semantics are the broker's, so a subscriber can reason about event_types
// exactly as about a queue binding.
//
// Matching takes time proportional to the product of the word counts of
// pattern and key: a backtracking matcher is exponential in the number of
// "#" and a tenant chooses its patterns.
func Match(pattern, routingKey string) bool {
	if !strings.Contains(pattern, "#") {
		return matchFixed(pattern, routingKey)
	}
	return matchWords(strings.Split(pattern, "."), strings.Split(routingKey, "."))
}

// matchFixed matches a pattern without "#" word by word, without
// allocating: the common case.
func matchFixed(p, k string) bool {
	for {
		pw, prest, pmore := strings.Cut(p, ".")
		kw, krest, kmore := strings.Cut(k, ".")
		if pw != "*" && pw != kw {
			return false
		}
		if !pmore || !kmore {
			return pmore == kmore
		}
		p, k = prest, krest
	}
}

// matchWords decides, for each pattern suffix from the last word back,
// which key suffixes it matches: next[j] holds whether p[i+1:] matches
// k[j:], cur[j] whether p[i:] does.
func matchWords(p, k []string) bool {
	n := len(k)
	next := make([]bool, n+1)
	cur := make([]bool, n+1)
	next[n] = true
	for i := len(p) - 1; i >= 0; i-- {
		switch w := p[i]; w {
		case "#":
			// Zero words (next[j]) or one word and still inside the
			// "#" (cur[j+1]).
			cur[n] = next[n]
			for j := n - 1; j >= 0; j-- {
				cur[j] = next[j] || cur[j+1]
			}
		default:
			cur[n] = false
			for j := range n {
				cur[j] = (w == "*" || w == k[j]) && next[j+1]
			}
		}
		next, cur = cur, next
	}
	return next[0]
}

// MatchAny reports whether routingKey matches one of patterns; no patterns
// means every event of the tenant.
func MatchAny(patterns []string, routingKey string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if Match(p, routingKey) {
			return true
		}
	}
	return false
}

// Validate checks that pattern is a usable topic pattern.
func Validate(pattern string) error {
	if pattern == "" {
		return fmt.Errorf("empty pattern")
	}
	if len(pattern) > 255 {
		return fmt.Errorf("pattern %q is longer than 255 bytes", pattern[:32]+"…")
	}
	for _, w := range strings.Split(pattern, ".") {
		if w == "" {
			return fmt.Errorf("pattern %q has an empty word", pattern)
		}
		if w != "#" && w != "*" && strings.ContainsAny(w, "#*") {
			return fmt.Errorf("pattern %q: '*' and '#' must be whole words", pattern)
		}
	}
	return nil
}
