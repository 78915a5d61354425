package verify

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"hash"
	"net/http"
	"sync/atomic"
	"time"
)

// compiled is a Config with what every request needs derived from it once:
// the secrets as HMAC keys, parsed public keys and the hmac template.
type compiled struct {
	Config
	raw       [][]byte
	ecdsa     []*ecdsa.PublicKey  // sendgrid
	ed        []ed25519.PublicKey // discord
	std       standardKeys        // standard
	hmacHash  func() hash.Hash    // hmac
	hmacParts []templatePart      // hmac
}

// compile prepares a valid Config.
func compile(c Config) (*compiled, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	p := &compiled{Config: c, raw: rawKeys(c.Secrets)}
	var err error
	switch c.Provider {
	case "sendgrid":
		p.ecdsa, err = parseSendGridKeys(c.Secrets)
	case "discord":
		p.ed, err = parseDiscordKeys(c.Secrets)
	case "standard":
		p.std, err = parseStandardKeys(c.Secrets)
	case "hmac":
		if p.hmacHash, err = c.HMAC.hash(); err == nil {
			p.hmacParts, err = parseTemplate(c.HMAC.SignedContent)
		}
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Verifier verifies the requests of one source. It is built once, when the
// source is loaded, so that a request costs only its signature check; it
// is safe for concurrent use.
type Verifier struct {
	all     Config
	expires []time.Time
	// cur is the prepared subset of the secrets active in a span of time;
	// it changes only when a secret expires.
	cur atomic.Pointer[activeSet]
}

// activeSet is the compiled Config of the secrets active at any time in
// (after, until]; a zero bound is open. c is nil when none is active.
type activeSet struct {
	c            *compiled
	after, until time.Time
}

func (a *activeSet) covers(t time.Time) bool {
	return (a.after.IsZero() || t.After(a.after)) && (a.until.IsZero() || !t.After(a.until))
}

// Compile checks c and prepares it. expires[i], when given and not zero,
// is when c.Secrets[i] stops being accepted; a request after it is
// verified with the other secrets only, which is how a rotated-out secret
// ends without another write to the source.
func Compile(c Config, expires []time.Time) (*Verifier, error) {
	full, err := compile(c)
	if err != nil {
		return nil, err
	}
	v := &Verifier{all: c, expires: expires}
	if !v.expiring() {
		v.cur.Store(&activeSet{c: full})
	}
	// Otherwise the set is made on first use, for the request's time.
	return v, nil
}

func (v *Verifier) expiring() bool {
	for _, t := range v.expires {
		if !t.IsZero() {
			return true
		}
	}
	return false
}

// active returns the compiled secrets active at t (nil if none).
func (v *Verifier) active(t time.Time) *compiled {
	if a := v.cur.Load(); a != nil && a.covers(t) {
		return a.c
	}
	a := &activeSet{}
	c := v.all
	c.Secrets = nil
	for i, s := range v.all.Secrets {
		var exp time.Time
		if i < len(v.expires) {
			exp = v.expires[i]
		}
		switch {
		case exp.IsZero():
			c.Secrets = append(c.Secrets, s)
		case exp.Before(t):
			if a.after.IsZero() || exp.After(a.after) {
				a.after = exp
			}
		default:
			c.Secrets = append(c.Secrets, s)
			if a.until.IsZero() || exp.Before(a.until) {
				a.until = exp
			}
		}
	}
	if len(c.Secrets) > 0 {
		// A subset of a valid Config is valid.
		a.c, _ = compile(c)
	}
	v.cur.Store(a)
	return a.c
}

// Verify authenticates r and returns the event it carries or, for a
// provider handshake, Event.Reply. The error, when not nil, is an *Error.
func (v *Verifier) Verify(r Request) (Event, error) {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	c := v.active(r.Now)
	if c == nil {
		return Event{}, &Error{Status: http.StatusUnauthorized, Reason: "the source has no active secret"}
	}
	ev, err := registry[c.Provider].verify(c, r)
	if err != nil {
		return Event{}, err
	}
	return ev, nil
}
