// Package logtest collects a service's JSON log lines in a test, so the
// test can check what was logged (a trace id, a field) from any goroutine.
package logtest

import (
	"bytes"
	"encoding/json"
	"sync"
)

// Buffer is an io.Writer for a slog JSON handler that keeps every line.
// It is safe for concurrent writers.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write keeps p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Lines decodes the lines written so far; a line that is not a JSON object
// is skipped.
func (b *Buffer) Lines() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(b.buf.Bytes(), []byte("\n")) {
		m := map[string]any{}
		if json.Unmarshal(l, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}
