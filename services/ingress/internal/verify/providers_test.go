package verify

import (
	"crypto/ed25519"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"
)

// verifyOK fails the test unless r verifies, and returns the event.
func verifyOK(t *testing.T, c Config, r Request) Event {
	t.Helper()
	ev, err := Verify(c, r)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return ev
}

func TestStripeSignatureList(t *testing.T) {
	secret, ts, body := "whsec_x", "1700000000", `{"id":"evt_1","type":"charge.succeeded"}`
	good := macHex(sha256.New, secret, ts+"."+body)
	c := Config{Provider: "stripe", Secrets: []string{secret}}
	for _, h := range []string{
		"t=" + ts + ",v1=" + good,
		"t=" + ts + ", v1=" + strings.Repeat("0", 64) + ", v1=" + good,
		"v1=" + good + ",t=" + ts + ",scheme=x",
		"t=" + ts + ",v1=nothex,v1=" + strings.ToUpper(good),
	} {
		verifyOK(t, c, Request{Header: hdr("Stripe-Signature", h), Body: []byte(body)})
	}
	// A v0 entry alone is not accepted, even when it is "right".
	_, err := Verify(c, Request{Header: hdr("Stripe-Signature", "t="+ts+",v0="+good), Body: []byte(body)})
	wantErr(t, err, http.StatusUnauthorized)
	// The signed timestamp is the one in the header: changing it breaks the signature.
	_, err = Verify(c, Request{Header: hdr("Stripe-Signature", "t=1700000001,v1="+good), Body: []byte(body)})
	wantErr(t, err, http.StatusUnauthorized)
	// A verified body that is not JSON is malformed.
	_, err = Verify(c, Request{Header: hdr("Stripe-Signature", "t="+ts+",v1="+macHex(sha256.New, secret, ts+".nope")), Body: []byte("nope")})
	wantErr(t, err, http.StatusBadRequest)
	// Missing fields fall back to the body hash and "unknown".
	ev := verifyOK(t, c, Request{Header: hdr("Stripe-Signature", "t="+ts+",v1="+macHex(sha256.New, secret, ts+".{}")), Body: []byte("{}")})
	if ev.ID != sha256Hex("{}") || ev.Type != "unknown" {
		t.Fatalf("event = %+v", ev)
	}
}

func TestGitHubTypeIncludesAction(t *testing.T) {
	secret := "gh-secret"
	c := Config{Provider: "github", Secrets: []string{secret}}
	for _, tc := range []struct{ event, contentType, body, want string }{
		{"pull_request", "application/json", `{"action":"opened","number":1}`, "pull_request.opened"},
		{"push", "application/json", `{"ref":"refs/heads/main"}`, "push"},
		{"issues", "application/x-www-form-urlencoded", "payload=" + `%7B%22action%22%3A%22closed%22%7D`, "issues.closed"},
		{"", "application/json", `{"action":"opened"}`, "unknown"},
	} {
		r := Request{Header: hdr("X-Hub-Signature-256", "sha256="+macHex(sha256.New, secret, tc.body),
			"X-GitHub-Event", tc.event, "Content-Type", tc.contentType), Body: []byte(tc.body)}
		ev := verifyOK(t, c, r)
		if ev.Type != tc.want || ev.ID != sha256Hex(tc.body) {
			t.Errorf("%s: event = %+v, want type %q and the body hash as id", tc.event, ev, tc.want)
		}
	}
}

func slackRequest(secret, ts, body string) Request {
	return Request{Header: hdr("X-Slack-Signature", "v0="+macHex(sha256.New, secret, "v0:"+ts+":"+body),
		"X-Slack-Request-Timestamp", ts), Body: []byte(body), Now: unix(ts)}
}

func TestSlackBodies(t *testing.T) {
	c := Config{Provider: "slack", Secrets: []string{slackSecret}, Tolerance: 5 * time.Minute}
	ts := "1700000000"
	for _, tc := range []struct{ body, id, typ string }{
		{`{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"hi"}}`, "Ev08MFMKH6", "app_mention"},
		{`{"type":"url_verification","token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}`, "", "url_verification"},
		{"payload=" + `%7B%22type%22%3A%22block_actions%22%7D`, "", "block_actions"},
		{"token=x&team_id=T1", "", "unknown"},
	} {
		ev := verifyOK(t, c, slackRequest(slackSecret, ts, tc.body))
		id := tc.id
		if id == "" {
			id = sha256Hex(tc.body)
		}
		if ev.ID != id || ev.Type != tc.typ {
			t.Errorf("event = %+v, want %q %q", ev, id, tc.typ)
		}
	}
}

func TestSlackHandshake(t *testing.T) {
	c := Config{Provider: "slack", Secrets: []string{slackSecret}, Tolerance: 5 * time.Minute}
	ts := "1700000000"
	challenge := "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
	body := `{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"` + challenge + `","type":"url_verification"}`
	got, ct, ok := Handshake(c, slackRequest(slackSecret, ts, body))
	if !ok || string(got) != challenge || !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Handshake = %q %q %v", got, ct, ok)
	}
	// Not verified: no echo.
	if _, _, ok := Handshake(c, slackRequest("wrong", ts, body)); ok {
		t.Fatal("answered an unverified url_verification")
	}
	// Stale: no echo.
	r := slackRequest(slackSecret, ts, body)
	r.Now = r.Now.Add(time.Hour)
	if _, _, ok := Handshake(c, r); ok {
		t.Fatal("answered a stale url_verification")
	}
	// An ordinary event is not a handshake.
	if _, _, ok := Handshake(c, slackRequest(slackSecret, ts, `{"type":"event_callback","event_id":"E1","event":{"type":"message"}}`)); ok {
		t.Fatal("event_callback treated as a handshake")
	}
}

func zoomRequest(secret, ts, body string) Request {
	return Request{Header: hdr("x-zm-signature", "v0="+macHex(sha256.New, secret, "v0:"+ts+":"+body),
		"x-zm-request-timestamp", ts), Body: []byte(body), Now: unix(ts)}
}

func TestZoomHandshake(t *testing.T) {
	// plainToken is the one of Zoom's documentation ("Validate your
	// webhook endpoint"); Zoom publishes no secret for it, so the secret
	// is ours and encryptedToken is computed here by the documented
	// algorithm: hex HMAC-SHA256(secret token, plainToken).
	secret, plain := "zoom-secret-token", "qgg8vlvZRS6UYooatFL8Aw"
	want := macHex(sha256.New, secret, plain)
	ts := "1700000000"
	body := `{"payload":{"plainToken":"` + plain + `"},"event_ts":1700000000123,"event":"endpoint.url_validation"}`
	c := Config{Provider: "zoom", Secrets: []string{"zoom-older-secret", secret}, Tolerance: 5 * time.Minute}

	got, ct, ok := Handshake(c, zoomRequest(secret, ts, body))
	wantBody := `{"plainToken":"` + plain + `","encryptedToken":"` + want + `"}`
	if !ok || string(got) != wantBody || ct != "application/json" {
		t.Fatalf("Handshake = %s %q %v, want %s", got, ct, ok, wantBody)
	}
	if zoomEncryptedToken(secret, plain) != want {
		t.Fatal("zoomEncryptedToken disagrees")
	}
	// An unsigned validation request would make us a signing oracle.
	r := zoomRequest(secret, ts, body)
	r.Header.Del("x-zm-signature")
	if _, _, ok := Handshake(c, r); ok {
		t.Fatal("answered an unsigned url_validation")
	}
	if _, _, ok := Handshake(c, zoomRequest("attacker", ts, body)); ok {
		t.Fatal("answered a url_validation signed with another secret")
	}
	// Ordinary events are not handshakes; other providers have none.
	f := fixtures(t)
	for _, fx := range f {
		if _, _, ok := Handshake(fx.cfg, clone(fx.req)); ok {
			t.Errorf("%s: example treated as a handshake", fx.name)
		}
	}
}

func TestDiscord(t *testing.T) {
	pub := hex.EncodeToString(edKey.Public().(ed25519.PublicKey))
	c := Config{Provider: "discord", Secrets: []string{pub}}
	ts := "1700000000"
	sign := func(body string) Request {
		return Request{Header: hdr("X-Signature-Ed25519", hex.EncodeToString(ed25519.Sign(edKey, []byte(ts+body))),
			"X-Signature-Timestamp", ts), Body: []byte(body)}
	}
	for _, tc := range []struct{ body, id, typ string }{
		{`{"id":"1","type":1,"application_id":"9"}`, "1", "ping"},
		{`{"id":"2","type":3}`, "2", "message_component"},
		{`{"id":"3","type":9}`, "3", "interaction.9"},
		{`{"version":1,"application_id":"9","type":0}`, "", "ping"},
		{`{"version":1,"application_id":"9","type":1,"event":{"type":"APPLICATION_AUTHORIZED","data":{}}}`, "", "APPLICATION_AUTHORIZED"},
	} {
		ev := verifyOK(t, c, sign(tc.body))
		id := tc.id
		if id == "" {
			id = sha256Hex(tc.body)
		}
		if ev.ID != id || ev.Type != tc.typ {
			t.Errorf("%s: event = %+v, want %q %q", tc.body, ev, id, tc.typ)
		}
	}
	body, ct, ok := Handshake(c, sign(`{"id":"1","type":1,"application_id":"9"}`))
	if !ok || string(body) != `{"type":1}` || ct != "application/json" {
		t.Fatalf("PING handshake = %s %q %v", body, ct, ok)
	}
	if _, _, ok := Handshake(c, sign(`{"version":1,"type":1,"event":{"type":"X"}}`)); ok {
		t.Fatal("webhook event treated as an interaction PING")
	}
}

func TestTwilio(t *testing.T) {
	params := []string{"CallSid", "CA1234567890ABCDE", "Digits", "1234", "From", "+14158675309", "To", "+18005551212", "Caller", "+14158675309"}
	form := formBody(params...)
	c := Config{Provider: "twilio", Secrets: []string{twilioToken}, PublicURL: twilioURL}
	req := func(sig, contentType, body string) Request {
		return Request{Header: hdr("X-Twilio-Signature", sig, "Content-Type", contentType), Body: []byte(body)}
	}
	formCT := "application/x-www-form-urlencoded"

	t.Run("published form example", func(t *testing.T) {
		ev := verifyOK(t, c, req("RSOYDt4T1cUTdK1PDd93/VVr8B8=", formCT, form))
		if ev.ID != sha256Hex(form) || ev.Type != "call" {
			t.Fatalf("event = %+v", ev)
		}
	})
	t.Run("published example with :443 in the signed URL", func(t *testing.T) {
		// twilio-python: "kvajT1Ptam85bY51eRf/AJRuM3w=" is the signature
		// of the same request with the URL written with :443.
		verifyOK(t, c, req("kvajT1Ptam85bY51eRf/AJRuM3w=", formCT, form))
	})
	t.Run("configured with :443, signed without", func(t *testing.T) {
		c := c
		c.PublicURL = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
		verifyOK(t, c, req("RSOYDt4T1cUTdK1PDd93/VVr8B8=", formCT, form))
		verifyOK(t, c, req("kvajT1Ptam85bY51eRf/AJRuM3w=", formCT, form))
	})
	t.Run("http with and without :80", func(t *testing.T) {
		c := c
		c.PublicURL = "http://mycompany.com/myapp.php?foo=1&bar=2"
		// twilio-python: "0ZXoZLH/DfblKGATFgpif+LLRf4=" is the http URL with :80.
		verifyOK(t, c, req("0ZXoZLH/DfblKGATFgpif+LLRf4=", formCT, form))
		verifyOK(t, c, req(macB64(sha1.New, twilioToken, c.PublicURL+"CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212"), formCT, form))
	})
	t.Run("other ports are part of the URL", func(t *testing.T) {
		c := c
		c.PublicURL = "https://mycompany.com:8443/myapp.php?foo=1&bar=2"
		_, err := Verify(c, req("RSOYDt4T1cUTdK1PDd93/VVr8B8=", formCT, form))
		wantErr(t, err, http.StatusUnauthorized)
	})
	t.Run("published repeated parameters", func(t *testing.T) {
		// twilio-python: repeated names sort by value.
		body := "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234"
		verifyOK(t, c, req("IK+Dwps556ElfBT0I3Rgjkr1wJU=", formCT, body))
	})
	t.Run("parameter order does not matter", func(t *testing.T) {
		reordered := "To=%2B18005551212&Caller=%2B14158675309&CallSid=CA1234567890ABCDE&From=%2B14158675309&Digits=1234"
		verifyOK(t, c, req("RSOYDt4T1cUTdK1PDd93/VVr8B8=", formCT, reordered))
	})
	t.Run("published JSON body", func(t *testing.T) {
		// twilio-python: the URL with &bodySHA256=<hex sha256 of body>.
		body := `{"property": "value", "boolean": true}`
		ev := verifyOK(t, c, req("a9nBmqA0ju/hNViExpshrM61xv4=", "application/json", body))
		if ev.ID != sha256Hex(body) || ev.Type != "unknown" {
			t.Fatalf("event = %+v", ev)
		}
		_, err := Verify(c, req("a9nBmqA0ju/hNViExpshrM61xv4=", "application/json", `{"property": "value", "boolean": false}`))
		wantErr(t, err, http.StatusUnauthorized)
	})
	t.Run("JSON signature cannot be replayed as a form", func(t *testing.T) {
		body := `{"property": "value", "boolean": true}`
		forged := "%26bodySHA256%3D=" + sha256Hex(body)
		_, err := Verify(c, req("a9nBmqA0ju/hNViExpshrM61xv4=", formCT, forged))
		wantErr(t, err, http.StatusBadRequest)
	})
	t.Run("JSON signature cannot be replayed as a form on the other port form", func(t *testing.T) {
		// Twilio signs https://host:443?bodySHA256=<h>; the port-less form
		// of the URL followed by the parameter string ":443" + "?bodySHA256=<h>"
		// would be the same bytes.
		body := `{"property": "value"}`
		pc := Config{Provider: "twilio", Secrets: []string{twilioToken}, PublicURL: "https://hooks.example.com:443"}
		sig := macB64(sha1.New, twilioToken, "https://hooks.example.com:443?bodySHA256="+sha256Hex(body))
		verifyOK(t, pc, req(sig, "application/json", body))
		for _, forged := range []string{
			"%3A443=%3FbodySHA256%3D" + sha256Hex(body),
			"%3A44=3%3FbodySHA256%3D" + sha256Hex(body),
		} {
			_, err := Verify(pc, req(sig, formCT, forged))
			wantErr(t, err, http.StatusBadRequest)
		}
	})
	t.Run("message types", func(t *testing.T) {
		body := formBody("MessageSid", "SM1", "MessageStatus", "Delivered", "AccountSid", "AC1")
		sig := macB64(sha1.New, twilioToken, twilioURL+"AccountSidAC1MessageSidSM1MessageStatusDelivered")
		ev := verifyOK(t, c, req(sig, formCT, body))
		if ev.Type != "message.delivered" || ev.ID != sha256Hex(body) {
			t.Fatalf("event = %+v", ev)
		}
	})
	t.Run("bad form", func(t *testing.T) {
		_, err := Verify(c, req("RSOYDt4T1cUTdK1PDd93/VVr8B8=", formCT, "a=%zz"))
		wantErr(t, err, http.StatusBadRequest)
		_, err = Verify(c, req("RSOYDt4T1cUTdK1PDd93/VVr8B8=", "text/plain; charset", form))
		wantErr(t, err, http.StatusBadRequest)
	})
}

func TestTwilioURLForms(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"https://a.test/x?y=1", []string{"https://a.test/x?y=1", "https://a.test:443/x?y=1"}},
		{"https://a.test:443/x", []string{"https://a.test:443/x", "https://a.test/x"}},
		{"http://u:p@a.test/x", []string{"http://u:p@a.test/x", "http://u:p@a.test:80/x"}},
		{"https://[::1]:443", []string{"https://[::1]:443", "https://[::1]"}},
		{"https://a.test:8443/x", []string{"https://a.test:8443/x"}},
	} {
		got := twilioURLForms(tc.in)
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("twilioURLForms(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStandardWebhooks(t *testing.T) {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	id, ts, body := "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", `{"test": 2432232314}`
	published := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	c := Config{Provider: "standard", Secrets: []string{secret}, Tolerance: 5 * time.Minute}
	now := unix(ts)

	t.Run("svix headers", func(t *testing.T) {
		ev := verifyOK(t, c, Request{Header: hdr("Svix-Id", id, "Svix-Timestamp", ts, "Svix-Signature", published), Body: []byte(body), Now: now})
		if ev.ID != id {
			t.Fatalf("event = %+v", ev)
		}
	})
	t.Run("several signatures, unknown versions ignored", func(t *testing.T) {
		sig := "v2,AAAA v1,bm9wZQ== v1a,AAAA " + published
		verifyOK(t, c, Request{Header: hdr("Webhook-Id", id, "Webhook-Timestamp", ts, "Webhook-Signature", sig), Body: []byte(body), Now: now})
	})
	t.Run("secret without prefix", func(t *testing.T) {
		c := c
		c.Secrets = []string{strings.TrimPrefix(secret, "whsec_")}
		verifyOK(t, c, Request{Header: hdr("Webhook-Id", id, "Webhook-Timestamp", ts, "Webhook-Signature", published), Body: []byte(body), Now: now})
	})
	t.Run("id is signed", func(t *testing.T) {
		_, err := Verify(c, Request{Header: hdr("Webhook-Id", id+"x", "Webhook-Timestamp", ts, "Webhook-Signature", published), Body: []byte(body), Now: now})
		wantErr(t, err, http.StatusUnauthorized)
	})
	t.Run("v1a Ed25519", func(t *testing.T) {
		pk := "whpk_" + base64.StdEncoding.EncodeToString(edKey.Public().(ed25519.PublicKey))
		other := "whpk_" + base64.StdEncoding.EncodeToString(edKeyOther.Public().(ed25519.PublicKey))
		body := `{"type":"invoice.paid","data":{}}`
		sig := "v1a," + base64.StdEncoding.EncodeToString(ed25519.Sign(edKey, []byte(id+"."+ts+"."+body)))
		r := Request{Header: hdr("Webhook-Id", id, "Webhook-Timestamp", ts, "Webhook-Signature", sig), Body: []byte(body), Now: now}
		c := Config{Provider: "standard", Secrets: []string{other, secret, pk}, Tolerance: time.Minute}
		ev := verifyOK(t, c, r)
		if ev.Type != "invoice.paid" {
			t.Fatalf("event = %+v", ev)
		}
		c.Secrets = []string{other, secret}
		_, err := Verify(c, r)
		wantErr(t, err, http.StatusUnauthorized)
	})
}

func TestLinearTimestampInBody(t *testing.T) {
	secret := "lin"
	sign := func(body string) Request {
		return Request{Header: hdr("Linear-Signature", macHex(sha256.New, secret, body), "Linear-Event", "Comment"),
			Body: []byte(body), Now: unix("1700000000")}
	}
	c := Config{Provider: "linear", Secrets: []string{secret}, Tolerance: time.Minute}
	_, err := Verify(c, sign(`{"type":"Comment","action":"update"}`))
	wantErr(t, err, http.StatusUnauthorized)
	_, err = Verify(c, sign(`{"type":"Comment","webhookTimestamp":"soon"}`))
	wantErr(t, err, http.StatusBadRequest)
	c.Tolerance = 0
	ev := verifyOK(t, c, sign(`{"webhookTimestamp":1}`))
	if ev.Type != "Comment" { // from the Linear-Event header
		t.Fatalf("event = %+v", ev)
	}
}

func TestMailgunForms(t *testing.T) {
	key, ts, token := "mg-key", "1700000000", "tok123456789"
	sig := macHex(sha256.New, key, ts+token)
	c := Config{Provider: "mailgun", Secrets: []string{key}, Tolerance: time.Minute}
	now := unix(ts)

	body := formBody("timestamp", ts, "token", token, "signature", sig, "event", "opened", "recipient", "a@b.test")
	ev := verifyOK(t, c, Request{Header: hdr("Content-Type", "application/x-www-form-urlencoded"), Body: []byte(body), Now: now})
	if ev.Type != "opened" || ev.ID != sha256Hex(body) {
		t.Fatalf("event = %+v", ev)
	}

	mp := "--XyZ\r\nContent-Disposition: form-data; name=\"attachment-1\"; filename=\"a.txt\"\r\n\r\nhello\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"timestamp\"\r\n\r\n" + ts + "\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n" + token + "\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"signature\"\r\n\r\n" + sig + "\r\n" +
		"--XyZ--\r\n"
	ev = verifyOK(t, c, Request{Header: hdr("Content-Type", "multipart/form-data; boundary=XyZ"), Body: []byte(mp), Now: now})
	if ev.Type != "unknown" {
		t.Fatalf("event = %+v", ev)
	}
	_, err := Verify(c, Request{Header: hdr("Content-Type", "multipart/form-data"), Body: []byte(mp), Now: now})
	wantErr(t, err, http.StatusBadRequest)
	_, err = Verify(c, Request{Header: hdr("Content-Type", "multipart/form-data; boundary=other"), Body: []byte(mp), Now: now})
	wantErr(t, err, http.StatusUnauthorized) // no signature found
	_, err = Verify(c, Request{Header: hdr("Content-Type", "application/json"), Body: []byte(`{"signature":`), Now: now})
	wantErr(t, err, http.StatusBadRequest)
}

func TestHMACSchemeDefaults(t *testing.T) {
	secret, body := "s3cret", `{"type":"thing.happened"}`
	c := Config{Provider: "hmac", Secrets: []string{secret}, HMAC: &HMACScheme{SignatureHeader: "X-Signature"}}
	ev := verifyOK(t, c, Request{Header: hdr("X-Signature", macHex(sha256.New, secret, body)), Body: []byte(body)})
	if ev.Type != "thing.happened" || ev.ID != sha256Hex(body) {
		t.Fatalf("event = %+v", ev)
	}
	// Millisecond timestamps and a literal template.
	c.HMAC = &HMACScheme{SignatureHeader: "X-Signature", Algorithm: "sha1", SignedContent: "v1:{timestamp}:{body}", TimestampHeader: "X-Ts"}
	c.Tolerance = time.Minute
	ms := "1700000000000"
	r := Request{Header: hdr("X-Signature", macHex(sha1.New, secret, "v1:"+ms+":"+body), "X-Ts", ms), Body: []byte(body), Now: unix("1700000030")}
	verifyOK(t, c, r)
	r.Now = unix("1700000090")
	_, err := Verify(c, r)
	wantErr(t, err, http.StatusUnauthorized)
}

func TestPaddleSecretRotationInHeader(t *testing.T) {
	ts, body := "1671552777", `{"event_id":"evt_1","event_type":"subscription.created"}`
	h := "ts=" + ts + ";h1=" + macHex(sha256.New, "old", ts+":"+body) + ";h1=" + macHex(sha256.New, "new", ts+":"+body)
	for _, secret := range []string{"old", "new"} {
		verifyOK(t, Config{Provider: "paddle", Secrets: []string{secret}}, Request{Header: hdr("Paddle-Signature", h), Body: []byte(body)})
	}
}
