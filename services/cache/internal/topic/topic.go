// Package topic matches AMQP topic patterns ("*" one word, "#" zero or
// more words) against routing keys in time proportional to the product of
// their word counts, so a pattern full of "#" cannot make matching blow up.
package topic

import (
	"fmt"
	"strings"
)

// Match reports whether routing key matches pattern.
func Match(pattern, key string) bool {
	p := strings.Split(pattern, ".")
	k := strings.Split(key, ".")
	// cur[j] is whether the pattern words seen so far match the first j
	// key words.
	cur := make([]bool, len(k)+1)
	next := make([]bool, len(k)+1)
	cur[0] = true
	for _, w := range p {
		clear(next)
		switch w {
		case "#":
			reach := false
			for j := 0; j <= len(k); j++ {
				reach = reach || cur[j]
				next[j] = reach
			}
		case "*":
			for j := 1; j <= len(k); j++ {
				next[j] = cur[j-1]
			}
		default:
			for j := 1; j <= len(k); j++ {
				next[j] = cur[j-1] && k[j-1] == w
			}
		}
		cur, next = next, cur
	}
	return cur[len(k)]
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
