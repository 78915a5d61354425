// Package hostile sends a corpus of bad requests to every public HTTP edge
// of the real binaries: each must get a clear 4xx without hanging, and
// every service must still be alive and healthy afterwards.
package hostile

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookyard/hookyard/test/internal/suite"
)

// answerWithin bounds how long any answer may take. It is no timing
// goal: it tells a hang (or a server that waits for bytes that never
// come) from an answer, with room for a loaded machine.
const answerWithin = 60 * time.Second

type hostileCase struct {
	name string
	svc  string
	raw  func() []byte // the request as sent on the wire
	want []int         // acceptable statuses; nil: any 4xx
}

func TestHostileInputGetsA4xxAndHarmsNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	id := suite.NewID()
	key := "key-" + suite.RandHex(16)
	st, err := suite.Start(ctx, t.TempDir(), suite.Options{ID: id, Keys: map[string]string{"t" + id: key}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	defer func() {
		if t.Failed() {
			t.Log(st.Logs())
		}
	}()
	source, secret := "stripe-"+id, "whsec_"+suite.RandHex(16)
	if err := st.Ingress().JSON(ctx, "POST", "/v1/sources", key, map[string]any{"name": source, "provider": "stripe", "secrets": []string{secret}}, 200, nil); err != nil {
		t.Fatal(err)
	}

	event := func(evt string) []byte {
		return []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":"invoice.paid","data":{"object":{"id":"in_1"}}}`, evt))
	}
	hook := func(body []byte, headers ...string) func() []byte {
		return func() []byte { return request("POST", "/webhooks/"+source, body, headers...) }
	}
	signed := func(body []byte, at time.Time) string {
		return "Stripe-Signature: " + suite.StripeSignature(secret, at, body)
	}
	now := time.Now
	big := bytes.Repeat([]byte("a"), 2<<20)
	bigEvent := append(append([]byte(`{"id":"evt_big","type":"invoice.paid","pad":"`), big...), '"', '}')
	badUTF8 := []byte("{\"id\":\"evt_\xff\xfe\",\"type\":\"invoice.paid\"}")

	cases := []hostileCase{
		{name: "no signature", svc: "ingress", raw: hook(event("evt_nosig"))},
		{name: "empty signature", svc: "ingress", raw: hook(event("evt_empty"), "Stripe-Signature: ")},
		{name: "malformed signature", svc: "ingress", raw: hook(event("evt_malformed"), "Stripe-Signature: t=,v1=,,,=")},
		{name: "signature not hex", svc: "ingress", raw: hook(event("evt_nothex"), "Stripe-Signature: t="+strconv.FormatInt(now().Unix(), 10)+",v1=zzzz")},
		{name: "signature of other bytes", svc: "ingress", raw: hook(event("evt_other"), signed(event("evt_else"), now()))},
		{name: "two signature headers", svc: "ingress", raw: hook(event("evt_two"), "Stripe-Signature: t=1,v1=00", signed(event("evt_two"), now()))},
		{name: "stale timestamp", svc: "ingress", raw: hook(event("evt_stale"), signed(event("evt_stale"), now().Add(-2*time.Hour)))},
		{name: "future timestamp", svc: "ingress", raw: hook(event("evt_future"), signed(event("evt_future"), now().Add(2*time.Hour)))},
		{name: "huge timestamp", svc: "ingress", raw: hook(event("evt_huge_ts"), "Stripe-Signature: t=99999999999999999999999,v1=00")},
		{name: "oversized body", svc: "ingress", raw: hook(bigEvent, signed(bigEvent, now())), want: []int{413}},
		{name: "invalid UTF-8 body", svc: "ingress", raw: hook(badUTF8, signed(badUTF8, now()))},
		{name: "not JSON", svc: "ingress", raw: hook([]byte("not json"), signed([]byte("not json"), now()))},
		{name: "empty body", svc: "ingress", raw: hook(nil, signed(nil, now()))},
		{name: "oversized header", svc: "ingress", raw: hook(event("evt_hdr"), "X-Pad: "+strings.Repeat("p", 2<<20)), want: []int{431}},
		{name: "control byte in header", svc: "ingress", raw: hook(event("evt_ctl"), "Stripe-Signature: t=1\x00,v1=00"), want: []int{400}},
		{name: "header without colon", svc: "ingress", raw: hook(event("evt_colon"), "Stripe-Signature t=1"), want: []int{400}},
		{name: "bad chunked body", svc: "ingress", raw: func() []byte {
			return []byte("POST /webhooks/" + source + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
		}, want: []int{400}},
		{name: "content-length and chunked", svc: "ingress", raw: func() []byte {
			return []byte("POST /webhooks/" + source + " HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		}},
		{name: "unknown source", svc: "ingress", raw: func() []byte { return request("POST", "/webhooks/nope-"+id, event("evt_unknown")) }, want: []int{404}},
		{name: "invalid UTF-8 source", svc: "ingress", raw: func() []byte { return request("POST", "/webhooks/%ff%fe", event("evt_utf")) }},
		{name: "long source", svc: "ingress", raw: func() []byte { return request("POST", "/webhooks/"+strings.Repeat("s", 5000), event("evt_long")) }},
		{name: "GET on webhooks", svc: "ingress", raw: func() []byte { return request("GET", "/webhooks/"+source, nil) }, want: []int{405}},
	}
	for name, path := range map[string]string{"ingress": "/v1/sources", "dispatcher": "/v1/endpoints", "cache": "/v1/namespaces", "jobs": "/v1/tasks"} {
		auth := "Authorization: Bearer " + key
		cases = append(cases,
			hostileCase{name: "no key, oversized body", svc: name, raw: func() []byte { return request("POST", path, big) }, want: []int{401}},
			hostileCase{name: "wrong scheme", svc: name, raw: func() []byte { return request("GET", path, nil, "Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=") }, want: []int{401}},
			hostileCase{name: "bearer without key", svc: name, raw: func() []byte { return request("GET", path, nil, "Authorization: Bearer") }, want: []int{401}},
			hostileCase{name: "long key", svc: name, raw: func() []byte { return request("GET", path, nil, "Authorization: Bearer "+strings.Repeat("k", 64<<10)) }, want: []int{401}},
			hostileCase{name: "key with invalid UTF-8", svc: name, raw: func() []byte { return request("GET", path, nil, "Authorization: Bearer \xff\xfe") }, want: []int{401}},
			hostileCase{name: "oversized body", svc: name, raw: func() []byte { return request("POST", path, big, auth) }, want: []int{413}},
			hostileCase{name: "not JSON", svc: name, raw: func() []byte { return request("POST", path, []byte("{not json"), auth) }, want: []int{400}},
			hostileCase{name: "invalid UTF-8 in JSON", svc: name, raw: func() []byte { return request("POST", path, []byte("{\"name\":\"\xff\xfe\"}"), auth) }, want: []int{400}},
			hostileCase{name: "deep JSON", svc: name, raw: func() []byte {
				return request("POST", path, []byte(strings.Repeat("[", 100000)+strings.Repeat("]", 100000)), auth)
			}, want: []int{400}},
			hostileCase{name: "invalid UTF-8 in path", svc: name, raw: func() []byte { return request("GET", path+"/%ff%fe", nil, auth) }},
			hostileCase{name: "oversized header", svc: name, raw: func() []byte { return request("GET", path, nil, auth, "X-Pad: "+strings.Repeat("p", 2<<20)) }, want: []int{431}},
		)
	}

	for _, c := range cases {
		t.Run(c.svc+"/"+c.name, func(t *testing.T) {
			svc := st.Services[c.svc]
			code, body, err := roundTrip(svc.HTTPAddr, c.raw())
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			ok := code >= 400 && code < 500
			if c.want != nil {
				ok = false
				for _, w := range c.want {
					ok = ok || code == w
				}
			}
			if !ok {
				t.Fatalf("status %d (%s), want %v (any 4xx if empty)", code, trim(body), c.want)
			}
			if code != 431 && code != 400 && len(bytes.TrimSpace(body)) == 0 {
				t.Errorf("status %d without a reason", code)
			}
			t.Logf("%d %s", code, trim(body))
		})
	}

	// A replay of an accepted webhook is answered as a duplicate, not
	// published again.
	t.Run("ingress/replay", func(t *testing.T) {
		body := event("evt_replay_" + id)
		for i, want := range []int{202, 200} {
			code, resp, err := st.Ingress().PostStripe(ctx, source, secret, body)
			if err != nil || code != want {
				t.Fatalf("send %d: %d %s %v, want %d", i+1, code, resp, err, want)
			}
			if i == 1 && !bytes.Contains(resp, []byte(`"duplicate":true`)) {
				t.Fatalf("replay answered %s, want duplicate", resp)
			}
		}
	})

	// Slow clients: headers or a body dribbled a byte at a time must not
	// hold a connection for ever (request headers within 5 s, a whole
	// request within 30 s).
	t.Run("slow", func(t *testing.T) {
		for _, name := range suite.Names {
			svc := st.Services[name]
			path := "/v1/sources"
			if name == "ingress" {
				path = "/webhooks/" + source
			}
			t.Run(name+"/headers", func(t *testing.T) {
				t.Parallel()
				slow(t, svc.HTTPAddr, "POST "+path+" HTTP/1.1\r\nHost: x\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
			})
			t.Run(name+"/body", func(t *testing.T) {
				t.Parallel()
				slow(t, svc.HTTPAddr, "POST "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+key+"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", strings.Repeat(" ", 200))
			})
		}
	})

	// Nothing crashed, and ingress still does its job.
	for _, s := range st.Services {
		if err := s.Healthy(ctx); err != nil {
			t.Error(err)
		}
	}
	code, resp, err := st.Ingress().PostStripe(ctx, source, secret, event("evt_after_"+id))
	if err != nil || code != 202 {
		t.Fatalf("a valid webhook after the corpus: %d %s %v", code, resp, err)
	}
}

// request builds a raw HTTP/1.1 request; headers are written as given, so
// they can be malformed.
func request(method, path string, body []byte, headers ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n", method, path)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != nil || method == "POST" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// roundTrip writes raw and reads one response. The server may answer
// (and close) before it has read everything, so the write runs on its own.
func roundTrip(addr string, raw []byte) (int, []byte, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(answerWithin))
	go func() { _, _ = conn.Write(raw) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, body, nil
}

// slow writes head, then tail one byte a second, and expects the server
// to answer a 4xx or close the connection before the tail is spent.
func slow(t *testing.T, addr, head, tail string) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	answered := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			answered <- "closed (" + err.Error() + ")"
			return
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			answered <- "status " + resp.Status + " (want 4xx)"
			return
		}
		answered <- "ok " + resp.Status
	}()
	for i := range len(tail) {
		select {
		case got := <-answered:
			if strings.HasPrefix(got, "status") {
				t.Fatal(got)
			}
			t.Logf("after %v: %s", time.Since(start).Round(time.Second), got)
			return
		case <-time.After(time.Second):
		}
		if _, err := conn.Write([]byte{tail[i]}); err != nil {
			t.Logf("after %v: connection closed by the server", time.Since(start).Round(time.Second))
			return
		}
	}
	t.Fatalf("the server still waited after %v of a byte a second", time.Since(start).Round(time.Second))
}

func trim(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
