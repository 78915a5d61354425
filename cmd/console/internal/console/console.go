// Package console serves the web console: static pages embedded in the
// binary, and a reverse proxy from /api/{service}/v1/... to each service's
// REST gateway. The console holds no key of its own: the browser sends the
// operator's API key with every call (Authorization: Bearer) and the proxy
// passes it on, so each service still decides what the key may see.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

//go:embed web
var webFS embed.FS

// CSP allows only the console's own script, style and API: no inline
// script or style, no framing, no other origins. Response snippets and
// payloads come from third parties, so this is the second line of defence
// behind rendering everything as text.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// maxBody bounds a proxied request body; the services apply their own caps.
const maxBody = 8 << 20

// New returns the console's handler.
func New(c Config, log *slog.Logger) (http.Handler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	static, err := fs.Sub(webFS, "web")
	if err != nil {
		return nil, err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 6 * time.Minute
	}
	proxies := make(map[string]*httputil.ReverseProxy, len(c.Upstreams))
	for name, u := range c.Upstreams {
		if u == nil {
			continue
		}
		target, err := parseUpstream(name, *u)
		if err != nil {
			return nil, err
		}
		proxies[name] = newProxy(name, target, log)
	}
	mux := http.NewServeMux()
	files := noCache(http.FileServerFS(static))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		name, path, raw, ok := Route(r.URL)
		p := proxies[name]
		if !ok || p == nil {
			apiError(w, http.StatusNotFound, 5, "no such API route")
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		default:
			apiError(w, http.StatusMethodNotAllowed, 12, "method not allowed")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		r = r.WithContext(ctx)
		r.URL.Path, r.URL.RawPath = path, raw
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		p.ServeHTTP(w, r)
	})
	return secure(mux), nil
}

func newProxy(name string, target *url.URL, log *slog.Logger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			// The console sets no cookies; none should reach a service.
			pr.Out.Header.Del("Cookie")
		},
		ModifyResponse: func(r *http.Response) error {
			r.Header.Del("Set-Cookie")
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				apiError(w, http.StatusRequestEntityTooLarge, 3, "request body too large")
			case errors.Is(err, context.DeadlineExceeded):
				apiError(w, http.StatusGatewayTimeout, 4, name+" service did not answer in time")
			case errors.Is(err, context.Canceled):
				// The browser went away; nobody reads the answer.
			default:
				log.Warn("proxy", "service", name, "path", r.URL.Path, "err", err)
				apiError(w, http.StatusBadGateway, 14, name+" service unreachable")
			}
		},
	}
}

// Route splits /api/{service}/v1/... into the service name and the path to
// forward, unescaped and escaped. Only /v1/ API paths are forwarded, never
// a service's /metrics or health routes, and never a path with empty, "."
// or ".." segments.
func Route(u *url.URL) (service, path, rawPath string, ok bool) {
	esc := u.EscapedPath()
	rest, found := strings.CutPrefix(esc, "/api/")
	if !found {
		return "", "", "", false
	}
	service, rawPath, found = strings.Cut(rest, "/")
	if !found || service == "" {
		return "", "", "", false
	}
	rawPath = "/" + rawPath
	path, err := url.PathUnescape(rawPath)
	if err != nil || !strings.HasPrefix(path, "/v1/") || !strings.HasPrefix(rawPath, "/v1/") {
		return "", "", "", false
	}
	for _, seg := range strings.Split(rawPath[1:], "/") {
		s, err := url.PathUnescape(seg)
		if err != nil || s == "" || s == "." || s == ".." {
			return "", "", "", false
		}
	}
	if rawPath == path {
		rawPath = ""
	}
	return service, path, rawPath, true
}

// apiError answers in the shape of the gateway's own errors.
func apiError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
}

func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

func noCache(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}
