package httptask

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/hookyard/hookyard/platform/ssrf"
)

// Parse reads untrusted task arguments: it must never panic, and what it
// accepts must be a request the runner can build.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"url":"http://10.0.0.1/x"}`,
		`{"url":"https://example.com/","method":"put","headers":{"X-A":"b"},"body":"hi"}`,
		`{"url":"http://127.0.0.1/"}`,
		`{"url":"http://[::ffff:127.0.0.1]/","method":"GET"}`,
		`{"url":"http://example.com","headers":{"a b":"c"}}`,
		`{"url":"http://example.com","extra":1}`,
		`[]`, `null`, `"x"`,
	} {
		f.Add(s)
	}
	policy := ssrf.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	f.Fuzz(func(t *testing.T, raw string) {
		a, err := Parse(json.RawMessage(raw), policy)
		if err != nil {
			return
		}
		if a.URL == "" || !token(a.Method) || strings.ToUpper(a.Method) != a.Method || len(a.Body) > MaxBodyBytes {
			t.Fatalf("accepted %q as %+v", raw, a)
		}
		if err := policy.ValidateURL(a.URL); err != nil {
			t.Fatalf("accepted a refused URL %q: %v", a.URL, err)
		}
	})
}

func TestParseDefaultsAndRefusals(t *testing.T) {
	policy := ssrf.Policy{}
	a, err := Parse(json.RawMessage(`{"url":"https://example.com/hook"}`), policy)
	if err != nil || a.Method != "POST" {
		t.Fatalf("%+v %v", a, err)
	}
	for _, raw := range []string{
		`{"url":"http://127.0.0.1/"}`, `{"url":"http://169.254.169.254/"}`, `{}`, `{"url":1}`,
		`{"url":"https://example.com","headers":{"X":"a\r\nb"}}`, `{"url":"https://example.com","method":"G(T"}`,
	} {
		if _, err := Parse(json.RawMessage(raw), policy); err == nil {
			t.Errorf("accepted %s", raw)
		}
	}
}
