package endpoint

import "strings"

// Match reports whether routingKey matches the AMQP topic pattern: words are
// separated by dots, "*" matches exactly one word and "#" zero or more. The
// semantics are the broker's, so a subscriber can reason about event_types
// exactly as about a queue binding.
func Match(pattern, routingKey string) bool {
	return matchWords(strings.Split(pattern, "."), strings.Split(routingKey, "."))
}

func matchWords(p, k []string) bool {
	for len(p) > 0 {
		switch p[0] {
		case "#":
			// Collapse consecutive "#": they match the same sets.
			for len(p) > 1 && p[1] == "#" {
				p = p[1:]
			}
			if len(p) == 1 {
				return true
			}
			for i := 0; i <= len(k); i++ {
				if matchWords(p[1:], k[i:]) {
					return true
				}
			}
			return false
		case "*":
			if len(k) == 0 {
				return false
			}
		default:
			if len(k) == 0 || k[0] != p[0] {
				return false
			}
		}
		p, k = p[1:], k[1:]
	}
	return len(k) == 0
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
