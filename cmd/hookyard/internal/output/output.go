// Package output prints results as aligned tables for people or as JSON
// (protojson, the REST field names) for scripts.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Formats of -o.
const (
	Table = "table"
	JSON  = "json"
)

// Printer writes results in one format.
type Printer struct {
	W      io.Writer
	Format string
}

// IsJSON reports whether results are printed as JSON.
func (p Printer) IsJSON() bool { return p.Format == JSON }

// Message prints m: as indented JSON, or as a two-column table of the
// given fields.
func (p Printer) Message(m proto.Message, rows [][2]string) error {
	if p.IsJSON() {
		return p.JSONMessage(m, true)
	}
	tw := tabwriter.NewWriter(p.W, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// JSONMessage prints m as JSON, indented or on one line (for streams).
func (p Printer) JSONMessage(m proto.Message, indent bool) error {
	o := protojson.MarshalOptions{EmitUnpopulated: false}
	if indent {
		o.Multiline, o.Indent = true, "  "
	}
	b, err := o.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if !indent {
		// protojson may add spaces at random; one compact line is easier
		// to read by line-oriented tools.
		var v any
		if json.Unmarshal(b, &v) == nil {
			if c, err := json.Marshal(v); err == nil {
				b = c
			}
		}
	}
	_, err = fmt.Fprintf(p.W, "%s\n", b)
	return err
}

// List prints a list response: as JSON the whole response m, as a table
// the header and one row per item, and the next page token if any.
func (p Printer) List(m proto.Message, header []string, rows [][]string, next string) error {
	if p.IsJSON() {
		return p.JSONMessage(m, true)
	}
	tw := tabwriter.NewWriter(p.W, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(p.W, "\nMore results: --page-token %s\n", next)
	}
	return nil
}

// Time formats a timestamp for a table; "-" when unset.
func Time(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format(time.DateTime)
}

// Duration formats a duration for a table; "-" when unset.
func Duration(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return d.AsDuration().String()
}

// Or returns s, or "-" when it is empty.
func Or(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Cut shortens s to n runes for a table cell, on one line.
func Cut(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
