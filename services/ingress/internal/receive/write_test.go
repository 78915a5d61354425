package receive

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"
)

// The hand-written answer is byte for byte what encoding/json writes.
func TestWriteMatchesTheEncoder(t *testing.T) {
	for _, r := range []reply{
		{ID: "evt_1"},
		{ID: "evt_1", Duplicate: true},
		{ID: "a<b>&c\"d\\e"},
		{ID: "é"},
		{Error: "bad"},
		{},
	} {
		rec := httptest.NewRecorder()
		write(rec, 202, r)
		var want bytes.Buffer
		_ = json.NewEncoder(&want).Encode(r)
		if got := rec.Body.String(); got != want.String() {
			t.Errorf("write(%+v) = %q, want %q", r, got, want.String())
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("content type %q", ct)
		}
	}
}
