package patch

import (
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
)

var rules = Rules{
	Kind: "source", Identity: []string{"name"}, OutputOnly: []string{"create_time"},
	Nested: []string{"hmac"}, Also: map[string][]string{"secrets": {"secret_expire_times"}},
}

func TestApply(t *testing.T) {
	cur := &ingressv1.Source{
		Name: "x", Provider: "hmac", Secrets: []string{"a"}, PublicUrl: "https://x.example/",
		Hmac: &ingressv1.HmacScheme{SignatureHeader: "X-Sig", Algorithm: "sha256"},
	}
	in := &ingressv1.Source{Name: "x", Secrets: []string{"b"}, Tolerance: durationpb.New(0),
		Hmac: &ingressv1.HmacScheme{Algorithm: "sha512"}}

	// Without a mask: what is set in the request.
	out, err := Apply(cur, in, nil, rules)
	if err != nil {
		t.Fatal(err)
	}
	if out.GetSecrets()[0] != "b" || out.GetPublicUrl() != cur.GetPublicUrl() || out.GetHmac().GetSignatureHeader() != "" || out.GetTolerance() == nil {
		t.Fatalf("unmasked: %v", out)
	}
	// A nested path of a Nested field changes that field alone; JSON
	// names are read; a named field unset in the request is cleared.
	out, err = Apply(cur, in, []string{"hmac.algorithm", "publicUrl"}, rules)
	if err != nil {
		t.Fatal(err)
	}
	if out.GetHmac().GetAlgorithm() != "sha512" || out.GetHmac().GetSignatureHeader() != "X-Sig" || out.GetPublicUrl() != "" || out.GetSecrets()[0] != "a" {
		t.Fatalf("masked: %v", out)
	}
	if cur.GetHmac().GetAlgorithm() != "sha256" {
		t.Fatal("Apply changed its input")
	}
	// The result shares nothing with the request.
	out, _ = Apply(cur, in, []string{"secrets"}, rules)
	in.Secrets[0] = "changed"
	if out.GetSecrets()[0] != "b" {
		t.Fatal("the result shares the request's list")
	}
	// Identity and output-only fields.
	for _, bad := range []struct {
		in    *ingressv1.Source
		paths []string
	}{
		{in, []string{"hmac.nope"}},
		{in, []string{"nope"}},
		{in, []string{"create_time"}},
		{&ingressv1.Source{Name: "y"}, []string{"name"}},
		{&ingressv1.Source{Name: "y"}, nil},
	} {
		if _, err := Apply(cur, bad.in, bad.paths, rules); err == nil {
			t.Errorf("%v with %q accepted", bad.in, bad.paths)
		}
	}
	// Updatable restricts what a mask may name, and what an unmasked
	// update takes.
	only := Rules{Updatable: []string{"public_url"}}
	if _, err := Apply(cur, in, []string{"secrets"}, only); err == nil {
		t.Error("a field outside Updatable was named and accepted")
	}
	out, err = Apply(cur, &ingressv1.Source{Secrets: []string{"z"}, PublicUrl: "https://y.example/"}, nil, only)
	if err != nil || out.GetSecrets()[0] != "a" || out.GetPublicUrl() != "https://y.example/" {
		t.Fatalf("unmasked with Updatable: %v, %v", out, err)
	}
}
