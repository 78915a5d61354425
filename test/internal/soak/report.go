package soak

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/test/internal/suite"
)

// Growing lists the series judged not flat.
func (r Report) Growing() []string {
	var out []string
	for _, v := range r.Verdicts {
		if v.Reason == "" && !v.Flat {
			out = append(out, v.Name)
		}
	}
	return out
}

// Print writes the per-interval table, the verdicts and the counts.
func (r Report) Print(w io.Writer) {
	if r.Partial {
		fmt.Fprintln(w, "PARTIAL RUN: sending was stopped before the planned duration")
	}
	fmt.Fprintln(w, "per interval (memory MiB; g/heap/rss/fd = goroutines, heap in use, RSS, open fds):")
	Table(w, r.Rows, suite.Names)
	fmt.Fprintf(w, "\njudged on the %d samples taken while sending (not the drain); flat = last-quarter mean at most %.0f%% above the second-quarter mean, or within the series' floor:\n", len(Judged(r.Rows)), 100*Threshold)
	for _, v := range r.Verdicts {
		fmt.Fprintln(w, v.String())
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "sending\t%v: due %d, missed %d, failed %d, acknowledged %d (%.0f/s)\n",
		r.SendTime.Round(time.Second), r.Due, r.Missed, r.Failed, r.Acknowledged, loadtest.Rate(r.Acknowledged, r.SendTime))
	if r.LastSendError != "" {
		fmt.Fprintf(tw, "last send error\t%s\n", r.LastSendError)
	}
	fmt.Fprintf(tw, "drain after the last send\t%v\n", r.DrainTime.Round(time.Second))
	fmt.Fprintf(tw, "delivered\t%d of %d acknowledged (duplicates %d, lost %d)\n", r.Delivered, r.Acknowledged, r.Duplicated, r.Lost)
	fmt.Fprintf(tw, "subscriber refused\t%d %s\n", r.SubscriberRefused, r.LastRefused)
	fmt.Fprintf(tw, "Redis keys left after clean-up\t%d (hookyard:ingress:sources:version is shared by all tenants)\n", r.KeysLeft)
	tw.Flush()
}
