package soak

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Proc is one service's figures at a sample, read from its /metrics.
type Proc struct {
	Goroutines float64
	HeapInuse  float64 // bytes
	RSS        float64 // bytes
	FDs        float64
}

// Row is one sample interval.
type Row struct {
	At time.Duration // since sending began
	// In the interval: webhooks due, not sent because every sender was
	// busy (the pace could not be kept), acknowledged (2xx) and failed.
	Due, Missed, Acked, Failed int
	// Since the start.
	AckedTotal, Delivered int
	Queued                int // messages in the vhost's queues, -1 unknown
	P50, P99              time.Duration
	RedisUsed             float64 // bytes, used_memory
	Procs                 map[string]Proc
	// Sending is false for the samples taken while the backlog drains
	// after the last send: with no traffic they would pull the last
	// quarter down and hide growth, so they are not judged.
	Sending bool
}

// Judged returns the rows the verdict is given on: those sampled while
// webhooks were being sent.
func Judged(rows []Row) []Row {
	var out []Row
	for _, r := range rows {
		if r.Sending {
			out = append(out, r)
		}
	}
	return out
}

const mib = 1 << 20

// SeriesOf turns the rows into the series the verdict is given on, in
// the order names lists the services. Memory is in MiB.
func SeriesOf(rows []Row, names []string) []Series {
	var out []Series
	add := func(name string, floor float64, get func(Row) float64) {
		s := Series{Name: name, Floor: floor}
		for _, r := range rows {
			s.Values = append(s.Values, get(r))
		}
		out = append(out, s)
	}
	for _, n := range names {
		add(n+" goroutines", 20, func(r Row) float64 { return r.Procs[n].Goroutines })
		add(n+" heap in use MiB", 8, func(r Row) float64 { return r.Procs[n].HeapInuse / mib })
		add(n+" RSS MiB", 8, func(r Row) float64 { return r.Procs[n].RSS / mib })
		add(n+" open fds", 10, func(r Row) float64 { return r.Procs[n].FDs })
	}
	add("redis used_memory MiB", 16, func(r Row) float64 { return r.RedisUsed / mib })
	add("queued messages", 1000, func(r Row) float64 { return float64(r.Queued) })
	add("backlog (acked-delivered)", 1000, func(r Row) float64 { return float64(r.AckedTotal - r.Delivered) })
	return out
}

// Header is the first line of the per-interval table.
func Header(names []string) string {
	cols := []string{"t", "due", "missed", "acked", "failed", "delivered", "backlog", "queued", "p50", "p99", "redis"}
	for _, n := range names {
		cols = append(cols, n+" g/heap/rss/fd")
	}
	return strings.Join(cols, "\t")
}

// Line is one row of the table: memory in MiB, latency in ms.
func (r Row) Line(names []string) string {
	cols := []string{
		fmt.Sprintf("%dm%02ds", int(r.At.Minutes()), int(r.At.Seconds())%60),
		fmt.Sprint(r.Due), fmt.Sprint(r.Missed), fmt.Sprint(r.Acked), fmt.Sprint(r.Failed),
		fmt.Sprint(r.Delivered), fmt.Sprint(r.AckedTotal - r.Delivered), fmt.Sprint(r.Queued),
		ms(r.P50), ms(r.P99), fmt.Sprintf("%.1f", r.RedisUsed/mib),
	}
	for _, n := range names {
		p := r.Procs[n]
		cols = append(cols, fmt.Sprintf("%.0f/%.1f/%.1f/%.0f", p.Goroutines, p.HeapInuse/mib, p.RSS/mib, p.FDs))
	}
	return strings.Join(cols, "\t")
}

// Table writes the rows aligned.
func Table(w io.Writer, rows []Row, names []string) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, Header(names))
	for _, r := range rows {
		fmt.Fprintln(tw, r.Line(names))
	}
	tw.Flush()
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
}
