package namespace

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Template is a key, tag or prefix template of an invalidation rule:
// literal text with "{a.b.c}" placeholders naming fields of an event's JSON
// payload.
type Template struct {
	parts []part
}

type part struct {
	lit  string
	path []string // nil for a literal
}

// ParseTemplate parses s.
func ParseTemplate(s string) (Template, error) {
	if s == "" {
		return Template{}, errors.New("empty template")
	}
	if len(s) > MaxKeyBytes {
		return Template{}, fmt.Errorf("template %q is longer than %d bytes", s[:32]+"…", MaxKeyBytes)
	}
	var t Template
	rest := s
	for rest != "" {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			t.parts = append(t.parts, part{lit: rest})
			break
		}
		if rest[i] == '}' {
			return Template{}, fmt.Errorf("template %q: '}' without '{'", s)
		}
		if i > 0 {
			t.parts = append(t.parts, part{lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return Template{}, fmt.Errorf("template %q: '{' without '}'", s)
		}
		field := rest[i+1 : i+j]
		if field == "" || strings.Contains(field, "{") {
			return Template{}, fmt.Errorf("template %q: empty or nested placeholder", s)
		}
		path := strings.Split(field, ".")
		for _, p := range path {
			if p == "" {
				return Template{}, fmt.Errorf("template %q: placeholder {%s} has an empty field name", s, field)
			}
		}
		t.parts = append(t.parts, part{path: path})
		rest = rest[i+j+1:]
	}
	return t, nil
}

// Expand fills the template from doc, the decoded event payload. It fails
// when a named field is missing or is not a string, number or boolean.
func (t Template) Expand(doc any) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.path == nil {
			b.WriteString(p.lit)
			continue
		}
		v, err := lookup(doc, p.path)
		if err != nil {
			return "", err
		}
		b.WriteString(v)
	}
	if err := ValidKey(b.String()); err != nil {
		return "", err
	}
	return b.String(), nil
}

func lookup(doc any, path []string) (string, error) {
	cur := doc
	for i, name := range path {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[name]
			if !ok {
				return "", fmt.Errorf("field %s is missing", strings.Join(path[:i+1], "."))
			}
			cur = v
		case []any:
			n, err := strconv.Atoi(name)
			if err != nil || n < 0 || n >= len(c) {
				return "", fmt.Errorf("field %s: no such array element", strings.Join(path[:i+1], "."))
			}
			cur = c[n]
		default:
			return "", fmt.Errorf("field %s is missing", strings.Join(path[:i+1], "."))
		}
	}
	switch v := cur.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	}
	return "", fmt.Errorf("field %s is not a string, number or boolean", strings.Join(path, "."))
}
