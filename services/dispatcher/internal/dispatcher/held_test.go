package dispatcher

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// Re-enabling an endpoint with PATCH disabled=false sends what was held
// while it was disabled, as :recover does.
func TestReenableSendsHeld(t *testing.T) {
	h := newHarness(t, loopback, nil)
	s := newSink(t, func(request) int { return http.StatusGone })
	ep := h.createEndpoint(&dispatcherv1.Endpoint{Url: s.URL})
	for i := range 3 {
		h.publish(fmt.Sprintf("held-%d", i), "a.b", []byte(`{}`))
	}
	for i := range 3 {
		waitFor(t, 10*time.Second, "held delivery", func() bool { return h.deliveryStatus(fmt.Sprintf("held-%d", i), ep.GetId()) == "held" })
	}
	s.setAnswer(ok)
	_, err := h.d.Endpoints.UpdateEndpoint(h.ctx(), &dispatcherv1.UpdateEndpointRequest{
		Endpoint:   &dispatcherv1.Endpoint{Id: ep.GetId(), Disabled: false},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		waitFor(t, 10*time.Second, "delivery after re-enabling", func() bool { return h.deliveryStatus(fmt.Sprintf("held-%d", i), ep.GetId()) == "delivered" })
	}
}
