package endpoint

import (
	"testing"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// Update masks read as they do for sources and namespaces: JSON names are
// accepted, and a nested path such as the "headers.X-Key" grpc-gateway
// derives from a PATCH body replaces its top-level field.
func TestApplyUpdateReadsMasksLikeEveryService(t *testing.T) {
	cur := &dispatcherv1.Endpoint{Id: "ep", Url: "https://a.example/", Headers: map[string]string{"X-Old": "1"}, MaxInFlight: 2}
	in := &dispatcherv1.Endpoint{Id: "ep", Headers: map[string]string{"X-Key": "v"}, MaxInFlight: 7}
	next := &dispatcherv1.Endpoint{}
	*next = dispatcherv1.Endpoint{Id: cur.Id, Url: cur.Url, Headers: cur.Headers, MaxInFlight: cur.MaxInFlight}
	if err := ApplyUpdate(next, in, &fieldmaskpb.FieldMask{Paths: []string{"headers.X-Key", "maxInFlight"}}); err != nil {
		t.Fatalf("ApplyUpdate: %v", err)
	}
	if len(next.GetHeaders()) != 1 || next.GetHeaders()["X-Key"] != "v" || next.GetMaxInFlight() != 7 || next.GetUrl() != cur.GetUrl() {
		t.Fatalf("updated endpoint: %v", next)
	}
	in.Headers["X-Key"] = "changed later"
	if next.GetHeaders()["X-Key"] != "v" {
		t.Fatal("the update shares the request's headers map")
	}
	if err := ApplyUpdate(next, &dispatcherv1.Endpoint{Id: "ep", Secret: "whsec_x"}, &fieldmaskpb.FieldMask{Paths: []string{"secret"}}); err == nil {
		t.Fatal("secret updated through the mask")
	}
}
