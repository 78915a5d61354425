package deliver

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
)

// A response is kept as its first message.MaxSnippet bytes and read on to
// MaxResponseRead, no further; a read error is reported with the snippet.
func TestReadResponse(t *testing.T) {
	long := strings.Repeat("0123456789", 10<<10) // 100 KiB
	for _, tc := range []struct {
		name, body string
		want       string
		read       int // bytes taken from the body
	}{
		{"empty", "", "", 0},
		{"short", `{"ok":true}`, `{"ok":true}`, 11},
		{"snippet", long[:message.MaxSnippet], long[:message.MaxSnippet], message.MaxSnippet},
		{"long", long, long[:message.MaxSnippet], MaxResponseRead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := strings.NewReader(tc.body)
			got, err := readResponse(r)
			if err != nil || got != tc.want {
				t.Fatalf("readResponse = %d bytes, %v; want %d bytes", len(got), err, len(tc.want))
			}
			if read := len(tc.body) - r.Len(); read != tc.read {
				t.Errorf("read %d bytes of the body, want %d", read, tc.read)
			}
		})
	}
	boom := errors.New("connection reset")
	for _, at := range []int{10, message.MaxSnippet + 10} {
		got, err := readResponse(io.MultiReader(strings.NewReader(long[:at]), iotest.ErrReader(boom)))
		if !errors.Is(err, boom) || got != long[:min(at, message.MaxSnippet)] {
			t.Errorf("error after %d bytes: readResponse = %d bytes, %v", at, len(got), err)
		}
	}
}
