package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
)

// scrapeSum returns the sum over all label sets of metric from the
// Prometheus text exposition at url, or 0 if it cannot be read: the figure
// only explains a measurement.
func scrapeSum(ctx context.Context, url, metric string) float64 {
	m, err := loadtest.ScrapeMetrics(ctx, url)
	if err != nil {
		return 0
	}
	return m[metric]
}

func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	default:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

// Print writes the report: what was measured, the CPU split and the
// targets. Phases that did not run are left out.
func (rep Report) Print(w io.Writer) {
	c := rep.Config
	fmt.Fprintf(w, "dispatcher benchmark: n=%d events per burst, c=%d (dispatcher concurrency, endpoint max in-flight, ceiling workers), %d-byte bodies\n\n",
		c.N, c.Concurrency, c.PayloadBytes)
	rows := append(append(append(append([]Result(nil), rep.Phases...), rep.Messages...), rep.Ceiling), rep.Floors...)
	rows = append(append(append(rows, rep.RecordFloors...), rep.AdmitFloors...), rep.PostFloor)
	for _, pf := range rep.PacedFloors {
		rows = append(rows, pf.Floor)
	}
	if rep.IsoBase.Name != "" {
		rows = append(rows, rep.IsoBase)
	}
	if rep.IsoSlow.Name != "" {
		rows = append(rows, rep.IsoSlow)
	}
	if rep.Ceiling.Name == "" && len(rep.Phases) == 0 && rep.Memory.Elapsed == 0 {
		fmt.Fprintln(w, "no phase completed")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tdeliveries\toffered/s\tdeliveries/s\tp50\tp99\tmax\tdups\tdeferrals\tslow hits\t")
	for _, p := range rows {
		if p.Name == "" {
			continue
		}
		offered := "-"
		if p.Offered > 0 {
			offered = fmt.Sprintf("%.0f", p.Offered)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%s\t%s\t%s\t%d\t%.0f\t%d\t\n", p.Name, p.Deliveries, offered, p.Rate,
			dur(p.Lat.P50), dur(p.Lat.P99), dur(p.Lat.Max), p.Dups, p.Deferrals, p.SlowHits)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nlatency: publish (before the confirm wait) to arrival at the sink; ceiling: request start to arrival")
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\thost CPU busy\tdispatcher cores\tbench cores\trabbitmq cores\tredis cores\tother cores\tdispatcher CPU/delivery\tRedis round trips/delivery\t")
	for _, p := range rows {
		if p.Name == "" {
			continue
		}
		u := p.Usage
		per := "-"
		if p.Deliveries > 0 && u.Dispatcher > 0 {
			per = fmt.Sprintf("%.0fµs", float64(u.Dispatcher.Microseconds())/float64(p.Deliveries))
		}
		trips := "-"
		if p.Deliveries > 0 && p.RedisTrips > 0 {
			trips = fmt.Sprintf("%.2f", p.RedisTrips/float64(p.Deliveries))
		}
		fmt.Fprintf(tw, "%s\t%.0f%%\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t\n", p.Name, 100*u.HostBusy,
			u.cores(u.Dispatcher), u.cores(u.Bench), u.cores(u.Broker), u.cores(u.Redis), u.other(), per, trips)
	}
	tw.Flush()
	if len(rep.Floors) > 0 {
		fmt.Fprintln(w, "floor rows: the dispatcher columns are the floor consumer's process (with the POST floor, the one process serves POST /v1/messages and consumes)")
	}
	if rep.PeakRSS > 0 {
		fmt.Fprintf(w, "\ndispatcher peak RSS (VmHWM) over throughput, ceiling and isolation: %.1f MiB\n", mib(rep.PeakRSS))
	}

	m := rep.Memory
	if m.Target > 0 && m.Elapsed > 0 {
		fmt.Fprintf(w, "\nmemory run: %d deliveries to a dead endpoint, retry schedule 1h, fresh dispatcher\n", m.Target)
		state := "all pending"
		if !m.Reached {
			state = "bound reached first"
		}
		fmt.Fprintf(w, "  pending in delay queues: %d of %d after %v (%s); %.0f attempts, %.0f/s\n",
			m.Pending, m.Target, m.Elapsed.Round(time.Second), state, m.Attempts, m.Attempts/m.Elapsed.Seconds())
		fmt.Fprintf(w, "  dispatcher peak RSS (VmHWM) %.1f MiB, RSS at the end %.1f MiB; Redis used_memory grew %.1f MiB\n",
			mib(m.PeakRSS), mib(m.RSS), mib(m.RedisGrowth))
		u := m.Usage
		fmt.Fprintf(w, "  host CPU busy %.0f%%; cores: dispatcher %.2f, bench %.2f, rabbitmq %.2f, redis %.2f, other processes %.2f\n",
			100*u.HostBusy, u.cores(u.Dispatcher), u.cores(u.Bench), u.cores(u.Broker), u.cores(u.Redis), u.other())
		if per := m.redisPerPending(); per > 0 {
			fmt.Fprintf(w, "  Redis MEMORY USAGE of the run's keys: %.0f bytes per pending retry; by kind (keys, bytes per pending retry):", per)
			for _, u := range m.RedisKeys {
				fmt.Fprintf(w, " %s %d %.0f;", u.Kind, u.Keys, float64(u.Bytes)/float64(m.Pending))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, "  queue depths (passive declare, ready messages):")
		for _, q := range m.Depths {
			if q.Depth != 0 {
				fmt.Fprintf(w, "    %-60s %d\n", q.Queue, q.Depth)
			}
		}
	}

	rep.printPaced(w)

	fmt.Fprintln(w, "\ntargets:")
	if b1 := rep.rate(1); b1 > 0 && rep.Ceiling.Rate > 0 {
		r1 := b1 / rep.Ceiling.Rate
		fmt.Fprintf(w, "  fan-out 1 deliveries/s >= %.1f x bare client loop:   %s x  %s\n", TargetCeilingRatio, ratio(r1, TargetCeilingRatio), verdict(r1 >= TargetCeilingRatio))
		if b10 := rep.rate(10); b10 > 0 {
			r10 := b10 / rep.Ceiling.Rate
			fmt.Fprintf(w, "  fan-out 10 deliveries/s >= %.1f x bare client loop:  %s x  %s\n", TargetCeilingRatio, ratio(r10, TargetCeilingRatio), verdict(r10 >= TargetCeilingRatio))
		}
	}
	if rep.Ceiling.Rate > 0 {
		for _, p := range rep.Messages {
			if p.Name == MessagesBurst && p.Rate > 0 {
				rm := p.Rate / rep.Ceiling.Rate
				fmt.Fprintf(w, "  POST /v1/messages deliveries/s >= %.1f x bare client loop:  %s x  %s\n", TargetCeilingRatio, ratio(rm, TargetCeilingRatio), verdict(rm >= TargetCeilingRatio))
			}
		}
	}
	for _, p := range append(append([]Result(nil), rep.Phases...), rep.Messages...) {
		u := p.Usage
		if p.Deliveries == 0 || u.Dispatcher == 0 {
			continue
		}
		per := u.Dispatcher / time.Duration(p.Deliveries)
		if !strings.HasSuffix(p.Name, "paced") {
			fmt.Fprintf(w, "  %s: dispatcher CPU per delivery <= %v:  %v  %s\n", p.Name, TargetCPUPerDelivery, per.Round(time.Microsecond), verdict(per <= TargetCPUPerDelivery))
			continue
		}
		fmt.Fprintf(w, "  %s: p50 <= %v, p99 <= %v:  %s, %s  %s\n", p.Name, TargetPacedP50, TargetPacedP99, dur(p.Lat.P50), dur(p.Lat.P99),
			pacedVerdict(p.Lat))
		for _, pf := range rep.PacedFloors {
			if pf.Dispatcher == p.Name {
				fl := pf.Floor.Lat
				fmt.Fprintf(w, "    %s at the same rate:  %s, %s  %s\n", pf.Floor.Name, dur(fl.P50), dur(fl.P99), pacedVerdict(fl))
			}
		}
	}
	rep.printFloors(w)
	if rep.IsoBase.Lat.P99 > 0 && rep.IsoSlow.Lat.P99 > 0 {
		f := float64(rep.IsoSlow.Lat.P99) / float64(rep.IsoBase.Lat.P99)
		fmt.Fprintf(w, "  healthy p99 with a slow endpoint <= %.1f x without:   %s x (%s vs %s)  %s\n",
			TargetIsolation, ratio(f, TargetIsolation), dur(rep.IsoSlow.Lat.P99), dur(rep.IsoBase.Lat.P99), verdict(f <= TargetIsolation))
	}
	if m.PeakRSS > 0 {
		note := ""
		if !m.Reached {
			note = fmt.Sprintf(" (only %d of %d pending)", m.Pending, m.Target)
		}
		fmt.Fprintf(w, "  peak RSS with the retry backlog <= %d MiB:           %.1f MiB%s  %s\n",
			TargetRSS>>20, mib(m.PeakRSS), note, verdict(m.PeakRSS <= TargetRSS))
	}
	if per := m.redisPerPending(); per > 0 {
		fmt.Fprintf(w, "  Redis bytes per pending retry <= %d:               %.0f  %s\n", TargetRedisPerPending, per, verdict(per <= TargetRedisPerPending))
	}
}

func pacedVerdict(l Latency) string {
	return verdict(l.P50 <= TargetPacedP50 && l.P99 <= TargetPacedP99)
}

// printFloors writes, for each floor, its ratio to the bare client loop
// and its CPU per delivery, the dispatcher's ratio to the floor, and which
// floors lie below the targets: a target above a floor cannot be met by
// any dispatcher that does at least that floor's work.
func (rep Report) printFloors(w io.Writer) {
	if rep.Ceiling.Rate <= 0 {
		return
	}
	var below []string
	for i, f := range Fanouts {
		if i < len(rep.Floors) {
			below = rep.printFloor(w, below, fmt.Sprintf("fan-out %d floor", f),
				fmt.Sprintf("consume, %d signed POST(s), ack", f), rep.Floors[i], rep.rate(f))
		}
	}
	for i, f := range Fanouts {
		if i < len(rep.RecordFloors) {
			below = rep.printFloor(w, below, fmt.Sprintf("fan-out %d floor + delivered record", f),
				fmt.Sprintf("consume, claim in Redis, %d signed POST(s), delivered record in Redis, ack", f), rep.RecordFloors[i], rep.rate(f))
		}
	}
	for i, f := range Fanouts {
		if i < len(rep.AdmitFloors) {
			below = rep.printFloor(w, below, fmt.Sprintf("fan-out %d floor + admission", f),
				fmt.Sprintf("consume, the dispatcher's admission script, %d signed POST(s), its finish script, ack", f), rep.AdmitFloors[i], rep.rate(f))
		}
	}
	msgs := 0.0
	for _, p := range rep.Messages {
		if p.Name == MessagesBurst {
			msgs = p.Rate
		}
	}
	below = rep.printFloor(w, below, "POST floor", "key lookup, JSON decode, publish with confirm, 202; consume, signed POST, ack", rep.PostFloor, msgs)
	if len(rep.Floors)+len(rep.RecordFloors)+len(rep.AdmitFloors) == 0 && rep.PostFloor.Rate <= 0 {
		return
	}
	if len(below) == 0 {
		fmt.Fprintln(w, "  every floor meets the throughput and CPU targets: they are reachable in principle")
		return
	}
	fmt.Fprintf(w, "  FLOOR MISSES A TARGET: %s; no dispatcher doing at least that much can meet it on this machine\n", strings.Join(below, "; "))
}

// printFloor writes the line of floor fl, named label and doing what,
// against the dispatcher's rate on the same path (0: not measured), and
// returns below with the targets fl misses added.
func (rep Report) printFloor(w io.Writer, below []string, label, what string, fl Result, dispatcher float64) []string {
	if fl.Rate <= 0 {
		return below
	}
	toLoop := fl.Rate / rep.Ceiling.Rate
	per := time.Duration(0)
	if fl.Deliveries > 0 {
		per = fl.Usage.Dispatcher / time.Duration(fl.Deliveries)
	}
	vs := "-"
	if dispatcher > 0 {
		vs = fmt.Sprintf("%.2f", dispatcher/fl.Rate)
	}
	fmt.Fprintf(w, "  %s (%s): %.0f/s = %s x bare client loop, %v CPU per delivery; dispatcher / floor %s\n",
		label, what, fl.Rate, ratio(toLoop, TargetCeilingRatio), per.Round(time.Microsecond), vs)
	if toLoop < TargetCeilingRatio {
		below = append(below, fmt.Sprintf("%s is %s x the bare loop (target %.1f x)", label, ratio(toLoop, TargetCeilingRatio), TargetCeilingRatio))
	}
	if per > TargetCPUPerDelivery {
		below = append(below, fmt.Sprintf("%s uses %v per delivery (target %v)", label, per.Round(time.Microsecond), TargetCPUPerDelivery))
	}
	return below
}

// ratio prints x with two decimals, or with as many more (up to six) as it
// takes for the printed figure to lie on the same side of threshold as x:
// 0.499 against 0.5 prints "0.499", not "0.50" beside a miss.
func ratio(x, threshold float64) string {
	side := func(v float64) int { return cmp.Compare(v, threshold) }
	for prec := 2; ; prec++ {
		s := strconv.FormatFloat(x, 'f', prec, 64)
		v, err := strconv.ParseFloat(s, 64)
		if prec == 6 || (err == nil && side(v) == side(x)) {
			return s
		}
	}
}

// printPaced writes each paced phase of the dispatcher beside the floors
// paced at its rate, with the publisher's wait for the broker: a p99 that
// the floors share is the transport's (broker, host), one they do not is
// the dispatcher's.
func (rep Report) printPaced(w io.Writer) {
	if len(rep.PacedFloors) == 0 {
		return
	}
	fmt.Fprintln(w, "\npaced phases beside the floors at the same offered rate (publish to arrival; confirm: the publisher's wait for the broker's confirm, for POST /v1/messages request start to 202; consume: publish to the consumer's receipt, for the dispatcher estimated from its event-lag histogram by interpolating within buckets):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\toffered/s\tp50\tp99\tmax\tconfirm mean\tconfirm p99\tconsume p50\tconsume p99\tdispatcher p99 / floor p99\t")
	row := func(p Result, vs string) {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.Name, p.Offered, dur(p.Lat.P50), dur(p.Lat.P99), dur(p.Lat.Max),
			dur(p.Confirm.Mean), dur(p.Confirm.P99), dur(p.Consume.P50), dur(p.Consume.P99), vs)
	}
	for _, d := range append(append([]Result(nil), rep.Phases...), rep.Messages...) {
		if !strings.HasSuffix(d.Name, ", paced") {
			continue
		}
		row(d, "")
		for _, pf := range rep.PacedFloors {
			if pf.Dispatcher != d.Name {
				continue
			}
			vs := "-"
			if pf.Floor.Lat.P99 > 0 && d.Lat.P99 > 0 {
				vs = fmt.Sprintf("%.2f", float64(d.Lat.P99)/float64(pf.Floor.Lat.P99))
			}
			row(pf.Floor, vs)
		}
	}
	tw.Flush()
}
