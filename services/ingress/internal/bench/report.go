package bench

import (
	"fmt"
	"io"
	"runtime"
	"strings"
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
	phases := []Summary{r.Saturated, r.Fixed, r.Raw}
	for _, f := range r.Floors {
		phases = append(phases, f.Summary)
	}
	phases = append(phases, r.Bare)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tsent\t2xx\tnon-2xx\terrors\trate/s\tp50\tp99\tp99.9\tmax\t")
	for _, s := range phases {
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
	// For the raw phase the client is the publisher itself. Stack CPU is
	// the server's (the raw publisher's) plus the broker's and Redis's.
	// Other cores are the busy host's CPU that none of these used: other
	// work on a shared host (and kernel time charged to nobody), which
	// makes a phase's figures unfair to the others.
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\thost CPU busy\tserver cores\tclient cores\trabbitmq cores\tredis cores\tother cores\tserver CPU/req\tstack CPU/req\tmean confirm\tmean verify\t")
	for _, s := range phases {
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
		fmt.Fprintf(tw, "%s\t%.0f%%\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t\n", s.Name, 100*u.HostBusy,
			cores(u.ServerCPU), cores(u.ClientCPU), cores(u.BrokerCPU), cores(u.RedisCPU), u.other(s.Elapsed),
			perReq(u.ServerCPU, s.OK), perReq(u.StackCPU, s.OK), optMS(u.MeanConfirm), optMS(u.MeanVerify))
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

	r.printFloors(w)

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

// printFloors writes each floor's ratio to the raw confirm ceiling and the
// ingress's ratio to it, and says which floors lie below the throughput
// target: a target above a floor cannot be met by any service that has to
// do what the floor does, on this machine at this concurrency.
func (r Report) printFloors(w io.Writer) {
	if len(r.Floors) == 0 || r.Raw.Rate <= 0 {
		return
	}
	fmt.Fprintf(w, "\ntransport floors (same C, body and confirm channels as ingress; stack = server + rabbitmq + redis):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "floor\trate/s\t/ raw confirm\tstack CPU/req\tingress / floor\t")
	var below []string
	for _, f := range r.Floors {
		if f.Rate <= 0 {
			continue
		}
		ratio := f.Rate / r.Raw.Rate
		if ratio < TargetConfirmRatio {
			below = append(below, fmt.Sprintf("%s (%.2f x)", f.Mode, ratio))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%s\t%.2f\t\n", f.Mode.describe(), f.Rate, ratio, perReq(f.Usage.StackCPU, f.OK), r.Saturated.Rate/f.Rate)
	}
	_ = tw.Flush()
	if len(below) == 0 {
		fmt.Fprintf(w, "every floor is at or above %.1f x the raw confirm ceiling: the throughput target is reachable in principle\n", TargetConfirmRatio)
		return
	}
	fmt.Fprintf(w, "BELOW the %.1f x raw confirm target: %s; an HTTP service doing that much per request cannot meet the target on this machine\n",
		TargetConfirmRatio, strings.Join(below, ", "))
}

// perReq is cpu per request, "-" if unknown.
func perReq(cpu time.Duration, n int) string {
	if cpu <= 0 || n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fµs", float64(cpu.Microseconds())/float64(n))
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
