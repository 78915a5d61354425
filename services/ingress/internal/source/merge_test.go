package source

import (
	"testing"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
)

func TestMergeNestedHMACPaths(t *testing.T) {
	cur := &ingressv1.Source{Name: "x", Provider: "hmac", Hmac: &ingressv1.HmacScheme{SignatureHeader: "X-Sig", Algorithm: "sha256"}}
	in := &ingressv1.Source{Name: "x", Hmac: &ingressv1.HmacScheme{Algorithm: "sha512"}}
	out, err := Merge(cur, in, []string{"hmac.algorithm"})
	if err != nil {
		t.Fatal(err)
	}
	if out.GetHmac().GetAlgorithm() != "sha512" || out.GetHmac().GetSignatureHeader() != "X-Sig" {
		t.Fatalf("merged hmac = %v", out.GetHmac())
	}
	if cur.GetHmac().GetAlgorithm() != "sha256" {
		t.Fatal("Merge changed its input")
	}
	for _, bad := range []string{"hmac.nope", "nope", "create_time"} {
		if _, err := Merge(cur, in, []string{bad}); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
	if _, err := Merge(cur, &ingressv1.Source{Name: "y"}, []string{"name"}); err == nil {
		t.Error("rename accepted")
	}
}
