package bench

import (
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"
)

// Print writes the results table, the ratios and the targets.
// Nothing is printed if the run failed before its first phase.
func (r Report) Print(w io.Writer) {
	if r.Saturated.Name == "" {
		return
	}
	c := r.Config
	fmt.Fprintf(w, "\ningress benchmark: n=%d c=%d fixed-rate duration=%v, %d-byte Stripe webhooks, GOMAXPROCS=%d\n\n",
		c.N, c.Concurrency, c.Duration, BodySize, runtime.GOMAXPROCS(0))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tsent\t2xx\tnon-2xx\terrors\trate/s\tp50\tp99\tp99.9\tmax\t")
	for _, s := range []Summary{r.Saturated, r.Fixed, r.Raw, r.Bare} {
		if s.Name == "" {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t\n",
			s.Name, s.Sent, s.OK, s.Non2xx, s.Errors, s.Rate, ms(s.P50), ms(s.P99), ms(s.P999), ms(s.Max))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nopen-loop latencies are measured from each request's scheduled send time")

	// Where the time went: host CPU (all processes, including anything
	// else running on the machine), its split between the processes of the
	// benchmark, and the server process's own CPU per successful request.
	// For the raw phase the client is the publisher itself.
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\thost CPU busy\tserver cores\tclient cores\trabbitmq cores\tredis cores\tserver CPU/req\tmean confirm\tmean verify\t")
	for _, s := range []Summary{r.Saturated, r.Fixed, r.Raw, r.Bare} {
		if s.Name == "" {
			continue
		}
		u := s.Usage
		cores := func(d time.Duration) string {
			if d <= 0 || s.Elapsed <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", d.Seconds()/s.Elapsed.Seconds())
		}
		perReq := "-"
		if u.ServerCPU > 0 && s.OK > 0 {
			perReq = fmt.Sprintf("%.0fµs", float64(u.ServerCPU.Microseconds())/float64(s.OK))
		}
		fmt.Fprintf(tw, "%s\t%.0f%%\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Name, 100*u.HostBusy,
			cores(u.ServerCPU), cores(u.ClientCPU), cores(u.BrokerCPU), cores(u.RedisCPU), perReq, optMS(u.MeanConfirm), optMS(u.MeanVerify))
	}
	_ = tw.Flush()
	if r.Fixed.Offered > 0 {
		fmt.Fprintf(w, "fixed rate: offered %.0f req/s, achieved %.0f req/s\n", r.Fixed.Offered, r.Fixed.Rate)
	}
	if r.PeakRSS > 0 {
		fmt.Fprintf(w, "ingress peak RSS (VmHWM): %.1f MiB\n", mib(r.PeakRSS))
	}

	fmt.Fprintln(w)
	if r.Raw.Rate > 0 {
		fmt.Fprintf(w, "ingress / raw confirm ceiling:  %.2f\n", r.Saturated.Rate/r.Raw.Rate)
	}
	if r.Bare.Rate > 0 {
		fmt.Fprintf(w, "ingress / bare HTTP ceiling:    %.2f\n", r.Saturated.Rate/r.Bare.Rate)
	}

	fmt.Fprintln(w, "\ntargets:")
	if r.Raw.Rate > 0 && r.Saturated.Rate > 0 {
		ratio := r.Saturated.Rate / r.Raw.Rate
		fmt.Fprintf(w, "  throughput >= %.1f x raw confirm ceiling:  %.2f x  %s\n", TargetConfirmRatio, ratio, met(ratio >= TargetConfirmRatio))
	}
	if r.Fixed.Sent > 0 {
		fmt.Fprintf(w, "  p99 <= %s at 1/4 saturation:          %s  %s\n", ms(TargetP99), ms(r.Fixed.P99), met(r.Fixed.P99 <= TargetP99))
	}
	if r.PeakRSS > 0 {
		fmt.Fprintf(w, "  peak RSS <= %.0f MiB:                      %.1f MiB  %s\n", mib(TargetRSS), mib(r.PeakRSS), met(r.PeakRSS <= TargetRSS))
	}
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func optMS(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return ms(d)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
