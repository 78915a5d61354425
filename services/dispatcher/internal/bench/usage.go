package bench

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Usage says where the CPU went during a phase. On a small shared host a
// throughput figure means little until it is known whether the host was
// out of CPU and which process used it.
type Usage struct {
	HostBusy   float64       // fraction of all CPUs busy, any process
	Wall       time.Duration // length of the phase
	Dispatcher time.Duration // CPU of the dispatcher process
	Bench      time.Duration // CPU of this process (publisher, sink, client)
	Broker     time.Duration // CPU of RabbitMQ (beam.smp), if visible
	Redis      time.Duration // CPU of redis-server, if visible
}

// clockTick is the unit of /proc CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

type snapshot struct {
	at                          time.Time
	busy, total                 uint64
	disp, self, broker, redisCP uint64
}

// sample reads the counters; any that cannot be read stay zero.
func sample(pid int) snapshot {
	s := snapshot{at: time.Now(), self: procJiffies(os.Getpid())}
	s.busy, s.total = hostJiffies()
	if pid > 0 {
		s.disp = procJiffies(pid)
	}
	s.broker = commJiffies("beam.smp")
	s.redisCP = commJiffies("redis-server")
	return s
}

func usage(a, b snapshot) Usage {
	u := Usage{Wall: b.at.Sub(a.at)}
	if dt := b.total - a.total; dt > 0 {
		u.HostBusy = float64(b.busy-a.busy) / float64(dt)
	}
	d := func(x, y uint64) time.Duration {
		if y < x {
			return 0
		}
		return time.Duration(y-x) * clockTick
	}
	u.Dispatcher, u.Bench = d(a.disp, b.disp), d(a.self, b.self)
	u.Broker, u.Redis = d(a.broker, b.broker), d(a.redisCP, b.redisCP)
	return u
}

// cores returns the CPU time as a number of cores busy over the phase.
func (u Usage) cores(cpu time.Duration) float64 {
	if u.Wall <= 0 {
		return 0
	}
	return cpu.Seconds() / u.Wall.Seconds()
}

// other returns the cores used by processes outside the benchmark (other
// work on a shared host, kernel threads), never below zero.
func (u Usage) other() float64 {
	ours := u.cores(u.Dispatcher) + u.cores(u.Bench) + u.cores(u.Broker) + u.cores(u.Redis)
	return max(u.HostBusy*float64(runtime.NumCPU())-ours, 0)
}

// hostJiffies returns busy and total jiffies of all CPUs from /proc/stat;
// idle and iowait count as not busy.
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
	for i, f := range fields[1:min(len(fields), 9)] {
		v, _ := strconv.ParseUint(f, 10, 64)
		total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return total - idle, total
}

// procJiffies returns utime+stime of pid.
func procJiffies(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

// commJiffies sums utime+stime of every visible process named comm.
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
