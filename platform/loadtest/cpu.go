package loadtest

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc CPU times. USER_HZ is 100 on every Linux
// architecture Go supports; reading it properly needs sysconf (cgo).
const clockTick = 10 * time.Millisecond

// CPUSample holds the CPU counters at one moment. On a small shared host a
// throughput figure means little until it is known whether the host was out
// of CPU and which process used it; two samples around a phase say that
// (see Sub).
type CPUSample struct {
	at                  time.Time
	hostBusy, hostTotal uint64 // /proc/stat jiffies
	server, self        uint64 // utime+stime in jiffies
	broker, redis       uint64 // the same, summed over processes by name
}

// SampleCPU reads the counters of the host, of process pid (the server
// under test; 0 for none), of this process and of local RabbitMQ
// (beam.smp) and Redis (redis-server). Counters that cannot be read stay
// zero: they explain a measurement, they are not part of it.
func SampleCPU(pid int) CPUSample {
	s := CPUSample{at: time.Now()}
	s.hostBusy, s.hostTotal = hostJiffies()
	if pid > 0 {
		s.server = procJiffies(pid)
	}
	s.self = procJiffies(os.Getpid())
	s.broker = commJiffies("beam.smp")
	s.redis = commJiffies("redis-server")
	return s
}

// CPU says where the CPU went between two samples.
type CPU struct {
	Wall     time.Duration // time between the samples
	HostBusy float64       // fraction of all CPUs busy, any process
	Server   time.Duration // the process given to SampleCPU; 0 if none or unknown
	Self     time.Duration // this process (load generator, publisher, sink)
	Broker   time.Duration // RabbitMQ (beam.smp); 0 if not visible
	Redis    time.Duration // redis-server; 0 if not visible
}

// Sub returns the CPU used from before to s. A counter that went down (a
// process that ended or could no longer be read) counts as zero rather
// than as a huge wrapped-around figure.
func (s CPUSample) Sub(before CPUSample) CPU {
	c := CPU{Wall: s.at.Sub(before.at)}
	if dt := s.hostTotal - before.hostTotal; dt > 0 {
		c.HostBusy = float64(s.hostBusy-before.hostBusy) / float64(dt)
	}
	d := func(from, to uint64) time.Duration {
		if to < from {
			return 0
		}
		return time.Duration(to-from) * clockTick
	}
	c.Server, c.Self = d(before.server, s.server), d(before.self, s.self)
	c.Broker, c.Redis = d(before.broker, s.broker), d(before.redis, s.redis)
	return c
}

// hostJiffies returns busy and total CPU time of all CPUs from the first
// line of /proc/stat, or zeros if it cannot be read.
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
	return parseHostStat(line)
}

// parseHostStat reads the "cpu ..." line of /proc/stat. Idle and iowait
// count as not busy.
func parseHostStat(line string) (busy, total uint64) {
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

// procJiffies returns utime+stime of pid, or 0 if it cannot be read.
func procJiffies(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return parseProcStat(string(b))
}

// parseProcStat returns utime+stime from the contents of /proc/<pid>/stat.
func parseProcStat(stat string) uint64 {
	// The command name (field 2) may contain spaces and parentheses;
	// fields are counted after its last closing parenthesis, where field 3
	// (state) comes first.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(stat[i+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseUint(fields[11], 10, 64) // field 14
	stime, _ := strconv.ParseUint(fields[12], 10, 64) // field 15
	return utime + stime
}

// commJiffies sums utime+stime of every visible process named comm. It
// shows how the host's CPU was split between the server, the load
// generator, the broker and Redis when they all run on one machine.
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
