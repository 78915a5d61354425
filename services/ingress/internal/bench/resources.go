package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage explains a phase's figures: on a small shared machine a low
// throughput means little until it is known whether the host was out of
// CPU, how much CPU the server spent per request, and how long requests
// waited for the broker.
type Usage struct {
	HostBusy    float64       // fraction of all CPUs busy during the phase, any process
	ServerCPU   time.Duration // CPU time of the server process during the phase; 0 if unknown
	ClientCPU   time.Duration // CPU time of this process (load generator or raw publisher)
	BrokerCPU   time.Duration // CPU time of local RabbitMQ (beam.smp); 0 if not visible
	RedisCPU    time.Duration // CPU time of local Redis (redis-server); 0 if not visible
	MeanConfirm time.Duration // ingress only: mean publish-to-confirm time
	MeanVerify  time.Duration // ingress only: mean signature verification time
}

// clockTick is the unit of /proc CPU times. USER_HZ is 100 on every Linux
// architecture Go supports; reading it properly needs sysconf (cgo).
const clockTick = 10 * time.Millisecond

// snapshot is the state sampled at the start and end of a phase.
type snapshot struct {
	hostBusy, hostTotal  uint64 // /proc/stat jiffies
	proc                 uint64 // utime+stime of the server, jiffies
	self, broker, redis  uint64 // the same for this process, RabbitMQ and Redis
	confirmSum, confirmN float64
	verifySum, verifyN   float64
}

// sample reads the host and process counters and, if metricsURL is set,
// the ingress histograms. Counters that cannot be read stay zero: they only
// explain the measurement, they are not part of it.
func sample(ctx context.Context, pid int, metricsURL string) snapshot {
	var s snapshot
	s.hostBusy, s.hostTotal = hostJiffies()
	if pid > 0 {
		s.proc = procJiffies(pid)
	}
	s.self = procJiffies(os.Getpid())
	s.broker = commJiffies("beam.smp")
	s.redis = commJiffies("redis-server")
	if metricsURL != "" {
		if m, err := scrape(ctx, metricsURL); err == nil {
			s.confirmSum, s.confirmN = m["hookyard_ingress_confirm_seconds_sum"], m["hookyard_ingress_confirm_seconds_count"]
			s.verifySum, s.verifyN = m["hookyard_ingress_verify_seconds_sum"], m["hookyard_ingress_verify_seconds_count"]
		}
	}
	return s
}

// usage returns what happened between a and b.
func usage(a, b snapshot) Usage {
	var u Usage
	if dt := b.hostTotal - a.hostTotal; dt > 0 {
		u.HostBusy = float64(b.hostBusy-a.hostBusy) / float64(dt)
	}
	u.ServerCPU = time.Duration(b.proc-a.proc) * clockTick
	u.ClientCPU = time.Duration(b.self-a.self) * clockTick
	if b.broker >= a.broker {
		u.BrokerCPU = time.Duration(b.broker-a.broker) * clockTick
	}
	if b.redis >= a.redis {
		u.RedisCPU = time.Duration(b.redis-a.redis) * clockTick
	}
	if n := b.confirmN - a.confirmN; n > 0 {
		u.MeanConfirm = time.Duration((b.confirmSum - a.confirmSum) / n * float64(time.Second))
	}
	if n := b.verifyN - a.verifyN; n > 0 {
		u.MeanVerify = time.Duration((b.verifySum - a.verifySum) / n * float64(time.Second))
	}
	return u
}

// hostJiffies returns busy and total CPU time of all CPUs from the first
// line of /proc/stat. Idle and iowait count as not busy.
func hostJiffies() (busy, total uint64) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, 0
	}
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0
	}
	var idle uint64
	// user nice system idle iowait irq softirq steal (guest time is
	// already included in user and nice).
	for i, f := range fields[1:min(len(fields), 9)] {
		v, _ := strconv.ParseUint(f, 10, 64)
		total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return total - idle, total
}

// procJiffies returns utime+stime of pid from /proc/<pid>/stat.
func procJiffies(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may contain spaces; fields are counted
	// after its closing parenthesis, where field 3 (state) comes first.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseUint(fields[11], 10, 64) // field 14
	stime, _ := strconv.ParseUint(fields[12], 10, 64) // field 15
	return utime + stime
}

// commJiffies sums utime+stime of every visible process named comm. It
// lets the report show how the host's CPU was split between ingress, the
// load generator, the broker and Redis when they all run on one machine.
func commJiffies(comm string) uint64 {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var sum uint64
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(b)) != comm {
			continue
		}
		sum += procJiffies(pid)
	}
	return sum
}

// scrape reads a Prometheus text exposition and returns every sample
// summed over its labels, keyed by metric name.
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 {
			name = line[:i]
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			rest, ok = strings.TrimSpace(line[j+1:]), true
		}
		if !ok {
			continue
		}
		valStr, _, _ := strings.Cut(strings.TrimSpace(rest), " ") // drop a timestamp
		v, err := strconv.ParseFloat(valStr, 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return out, nil
}
