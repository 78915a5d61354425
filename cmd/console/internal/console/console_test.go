package console

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
)

type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *seen) last() *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		return nil
	}
	return s.reqs[len(s.reqs)-1]
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// newConsole starts a console whose dispatcher is an upstream recording
// what reaches it; the other services point at a closed port.
func newConsole(t *testing.T) (*httptest.Server, *seen) {
	t.Helper()
	rec := &seen{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r.Clone(r.Context()))
		rec.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "a=b")
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	c := Config{Upstreams: map[string]*string{"dispatcher": &up.URL, "jobs": &closedURL}}
	h, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, rec
}

func do(t *testing.T, method, u string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// Redirects are answers of their own here (the mux cleans paths).
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestProxyForwardsKeyAndPath(t *testing.T) {
	srv, rec := newConsole(t)
	res := do(t, "POST", srv.URL+"/api/dispatcher/v1/messages/a%2Fb:resend?x=1", map[string]string{
		"Authorization": "Bearer k1", "Cookie": "session=secret"})
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	r := rec.last()
	if r == nil {
		t.Fatal("upstream not reached")
	}
	if got := r.URL.EscapedPath(); got != "/v1/messages/a%2Fb:resend" {
		t.Errorf("upstream path %q", got)
	}
	if r.URL.RawQuery != "x=1" {
		t.Errorf("query %q", r.URL.RawQuery)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer k1" {
		t.Errorf("Authorization %q, want the browser's key passed on", got)
	}
	if got := r.Header.Get("Cookie"); got != "" {
		t.Errorf("Cookie %q reached the service", got)
	}
	if got := res.Header.Get("Set-Cookie"); got != "" {
		t.Errorf("Set-Cookie %q reached the browser", got)
	}
	if got := res.Header.Get("Content-Security-Policy"); got != CSP {
		t.Errorf("CSP %q", got)
	}
}

func TestProxyRefusesWhatIsNotAnAPIRoute(t *testing.T) {
	srv, rec := newConsole(t)
	for _, p := range []string{
		"/api/dispatcher/metrics",
		"/api/dispatcher/healthz",
		"/api/dispatcher/",
		"/api/dispatcher",
		"/api/nosuch/v1/things",
		"/api/dispatcher/v1/%2e%2e/metrics",
		"/api/dispatcher/v1/x/%2E%2E/%2E%2E/metrics",
		"/api/dispatcher/v1//x",
		"/api/dispatcher/v1%2fx",
	} {
		res := do(t, "GET", srv.URL+p, nil)
		if res.StatusCode != http.StatusNotFound && res.StatusCode/100 != 3 {
			t.Errorf("%s: status %d, want 404 (or a redirect to the clean path)", p, res.StatusCode)
		}
	}
	if n := rec.count(); n != 0 {
		t.Errorf("%d requests reached the service: last %s", n, rec.last().URL)
	}
	if res := do(t, "OPTIONS", srv.URL+"/api/dispatcher/v1/endpoints", nil); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("OPTIONS: status %d", res.StatusCode)
	}
}

func TestProxyUnreachableService(t *testing.T) {
	srv, _ := newConsole(t)
	res := do(t, "GET", srv.URL+"/api/jobs/v1/queues", nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "jobs service unreachable") {
		t.Fatalf("status %d body %s", res.StatusCode, body)
	}
}

func TestStaticPages(t *testing.T) {
	srv, _ := newConsole(t)
	res := do(t, "GET", srv.URL+"/", nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.Contains(string(body), `<script src="app.js" defer></script>`) {
		t.Fatalf("status %d body %.200s", res.StatusCode, body)
	}
	for k, v := range map[string]string{
		"Content-Security-Policy": CSP,
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
	} {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if res := do(t, "GET", srv.URL+"/app.js", nil); !strings.Contains(res.Header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js Content-Type %q", res.Header.Get("Content-Type"))
	}
	if res := do(t, "POST", srv.URL+"/", nil); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d", res.StatusCode)
	}
}

// The CSP forbids inline script and style and no page may parse HTML out of
// data: response snippets and payloads come from third parties.
func TestPagesUseNoHTMLSinks(t *testing.T) {
	sinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|srcdoc|createContextualFragment|DOMParser`)
	inline := regexp.MustCompile(`(?i)<script>|<script[^>]*>[^<]|<style|\sstyle=|\son[a-z]+=|javascript:`)
	n := 0
	err := fs.WalkDir(webFS, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(webFS, p)
		if err != nil {
			return err
		}
		n++
		if m := sinks.Find(b); m != nil {
			t.Errorf("%s uses %s", p, m)
		}
		if strings.HasSuffix(p, ".html") {
			if m := inline.Find(b); m != nil {
				t.Errorf("%s has inline %q, which the CSP refuses", p, m)
			}
		}
		return nil
	})
	if err != nil || n < 4 {
		t.Fatalf("walked %d files: %v", n, err)
	}
}

func TestConfigRefusesBadUpstream(t *testing.T) {
	for _, u := range []string{"127.0.0.1:8081", "ftp://x", "http://", "http://h/?q=1", "http://u:p@h/"} {
		if _, err := New(Config{Upstreams: map[string]*string{"dispatcher": &u}}, nil); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

func TestRoute(t *testing.T) {
	for in, want := range map[string][3]string{
		"/api/jobs/v1/tasks/t1:cancel":          {"jobs", "/v1/tasks/t1:cancel", ""},
		"/api/cache/v1/namespaces/n/keys/a%2Fb": {"cache", "/v1/namespaces/n/keys/a/b", "/v1/namespaces/n/keys/a%2Fb"},
	} {
		u, _ := url.Parse(in)
		s, p, raw, ok := Route(u)
		if !ok || [3]string{s, p, raw} != want {
			t.Errorf("%s: %q %q %q %v, want %q", in, s, p, raw, ok, want)
		}
	}
}

func FuzzRoute(f *testing.F) {
	for _, s := range []string{"/api/jobs/v1/tasks", "/api/x/v1/%2e%2e/m", "/api/cache/v1/namespaces/a/keys/%2F", "/api//v1/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		svc, path, raw, ok := Route(u)
		if !ok {
			return
		}
		if svc == "" || strings.Contains(svc, "/") {
			t.Fatalf("service %q", svc)
		}
		if !strings.HasPrefix(path, "/v1/") {
			t.Fatalf("path %q outside /v1/", path)
		}
		esc := raw
		if esc == "" {
			esc = path
		}
		for _, seg := range strings.Split(esc, "/")[1:] {
			if d, _ := url.PathUnescape(seg); d == "" || d == "." || d == ".." {
				t.Fatalf("segment %q in %q", seg, esc)
			}
		}
		if raw != "" {
			if d, err := url.PathUnescape(raw); err != nil || d != path {
				t.Fatalf("raw %q unescapes to %q, path %q", raw, d, path)
			}
		}
	})
}
