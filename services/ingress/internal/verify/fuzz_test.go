package verify

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The fuzz targets check two things: no input makes the code panic, and a
// request that verifies carries exactly what was signed. The seed corpus
// (the valid examples and a few malformed headers) runs in plain go test.

// encodeHeaders writes h one "Name: value" line per value.
func encodeHeaders(h http.Header) string {
	var b strings.Builder
	for name, values := range h {
		for _, v := range values {
			b.WriteString(name + ": " + v + "\n")
		}
	}
	return b.String()
}

// decodeHeaders reads what encodeHeaders wrote, tolerating anything.
func decodeHeaders(s string) http.Header {
	h := make(http.Header)
	for i, line := range strings.Split(s, "\n") {
		if i >= 64 {
			break
		}
		name, value, ok := strings.Cut(line, ": ")
		if ok {
			h.Add(name, value)
		}
	}
	return h
}

// signedContent is what a verified request must agree with its example
// on. For most providers that is the body byte for byte. Twilio's form
// scheme signs the URL and the sorted parameters, not the bytes, so two
// bodies that differ only in parameter order are the same signed content.
// Mailgun signs only timestamp and token (see mailgun.go), so that is what
// is compared.
func signedContent(t *testing.T, provider string, r Request) string {
	switch provider {
	case "twilio":
		isJSON, err := twilioIsJSON(r)
		if err != nil {
			t.Fatalf("verified a request whose Content-Type does not parse: %v", err)
		}
		if isJSON {
			return "json:" + string(r.Body)
		}
		_, params, err := twilioParams(r.Body)
		if err != nil {
			t.Fatalf("verified a request whose form does not parse: %v", err)
		}
		return "form:" + params
	case "mailgun":
		f, err := mailgunParse(r)
		if err != nil {
			t.Fatalf("verified a request whose body does not parse: %v", err)
		}
		// Hex is case-insensitive: "AB" and "ab" are the same MAC.
		return f.timestamp + "|" + f.token + "|" + strings.ToLower(f.signature)
	}
	return string(r.Body)
}

func FuzzVerify(f *testing.F) {
	fx := fixtures(f)
	for i, x := range fx {
		f.Add(uint8(i), encodeHeaders(x.req.Header), x.req.Body)
		f.Add(uint8(i), encodeHeaders(x.req.Header), []byte{})
		f.Add(uint8(i), "", x.req.Body)
	}
	f.Fuzz(func(t *testing.T, which uint8, headers string, body []byte) {
		x := fx[int(which)%len(fx)]
		c := x.cfg
		// With the timestamp check on, as it should be in production: a
		// signature over "<t><body>" also covers a shorter t followed by
		// the rest of its digits and the body, and only the tolerance
		// tells those apart.
		c.Tolerance = 5 * time.Minute
		now := x.signedAt
		if now.IsZero() {
			now = time.Unix(1700000000, 0)
		}
		r := Request{Header: decodeHeaders(headers), Body: body, Now: now}
		ev, err := Verify(c, r)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is %T, not *Error", err, err)
			}
			if e.Status != http.StatusBadRequest && e.Status != http.StatusUnauthorized {
				t.Fatalf("status %d (%s), want 400 or 401", e.Status, e.Reason)
			}
			if e.Reason == "" {
				t.Fatal("empty reason")
			}
			return
		}
		if ev.ID == "" || ev.Type == "" || len(ev.ID) > maxIDLen || len(ev.Type) > maxTypeLen {
			t.Fatalf("bad event %+v", ev)
		}
		want := clone(x.req)
		if got, exp := signedContent(t, c.Provider, r), signedContent(t, c.Provider, want); got != exp {
			t.Fatalf("verified content differs from the signed example:\n got %q\nwant %q", got, exp)
		}
		if c.Provider != "twilio" && c.Provider != "mailgun" && !bytes.Equal(body, x.req.Body) {
			t.Fatalf("verified a body other than the signed one: %q", body)
		}
		// Handshake must not panic on the same input either.
		Handshake(c, r)
	})
}

// checkSigs asserts the common bounds of a header parser's result.
func checkSigs(t *testing.T, sigs ...[][]byte) {
	n := 0
	for _, s := range sigs {
		n += len(s)
	}
	if n > maxSignatures {
		t.Fatalf("%d signatures parsed, more than %d", n, maxSignatures)
	}
}

func FuzzParseStripeHeader(f *testing.F) {
	f.Add("t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b")
	f.Add("t=,v1=,=,,")
	f.Add(strings.Repeat("v1=00,", 20))
	f.Fuzz(func(t *testing.T, v string) {
		ts, sigs, err := parseStripeHeader(v)
		if err == nil && ts == "" {
			t.Fatal("no timestamp and no error")
		}
		checkSigs(t, sigs)
	})
}

func FuzzParsePaddleHeader(f *testing.F) {
	f.Add("ts=1671552777;h1=eb4d0dc8853be92b7f063b9f3ba5233eb920a09459b6e6b2c26705b4364db151")
	f.Add(";;ts=;h1")
	f.Fuzz(func(t *testing.T, v string) {
		ts, sigs, err := parsePaddleHeader(v)
		if err == nil && ts == "" {
			t.Fatal("no timestamp and no error")
		}
		checkSigs(t, sigs)
	})
}

func FuzzParsePagerDutyHeader(f *testing.F) {
	f.Add("v1=ab,v1=cd")
	f.Add("v1=,v2=zz,")
	f.Fuzz(func(t *testing.T, v string) {
		sigs, _ := parsePagerDutyHeader(v)
		checkSigs(t, sigs)
	})
}

func FuzzParseStandardSignatures(f *testing.F) {
	f.Add("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1a,AAAA")
	f.Add("v1, v1,, ,")
	f.Fuzz(func(t *testing.T, v string) {
		v1, v1a, _ := parseStandardSignatures("webhook-signature", v)
		checkSigs(t, v1, v1a)
	})
}

func FuzzTwilioRequest(f *testing.F) {
	f.Add("https://mycompany.com/myapp.php?foo=1&bar=2", twilioBody)
	f.Add("https://u@[::1]:443", "a=%zz&&=")
	f.Add("http://x:80", "a=1;b=2")
	f.Fuzz(func(t *testing.T, rawURL, body string) {
		forms := twilioURLForms(rawURL)
		if len(forms) == 0 || len(forms) > 2 || forms[0] != rawURL {
			t.Fatalf("twilioURLForms(%q) = %q", rawURL, forms)
		}
		if _, params, err := twilioParams([]byte(body)); err == nil {
			if strings.HasPrefix(params, "?") || strings.HasPrefix(params, "&") || strings.HasPrefix(params, ":") {
				t.Fatalf("parameter string %q could stand for a JSON request's URL suffix", params)
			}
		}
	})
}

func FuzzParseTemplate(f *testing.F) {
	f.Add("{id}.{timestamp}.{body}")
	f.Add("{body")
	f.Add("}{{body}}")
	f.Fuzz(func(t *testing.T, tmpl string) {
		parts, err := parseTemplate(tmpl)
		if err != nil {
			return
		}
		bodies := 0
		for _, p := range parts {
			if p.name == "body" {
				bodies++
			}
		}
		if bodies != 1 {
			t.Fatalf("template %q accepted with %d {body}", tmpl, bodies)
		}
	})
}
