package loadtest

import (
	"math"
	"testing"
	"time"
)

func TestParseHostStat(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	busy, total := parseHostStat("cpu  100 5 50 800 40 3 2 0 7 0\n")
	if busy != 160 || total != 1000 {
		t.Errorf("busy, total = %d, %d; want 160, 1000", busy, total)
	}
	if busy, total := parseHostStat("cpu0 1 2 3 4 5 6 7 8\n"); busy != 0 || total != 0 {
		t.Errorf("a per-CPU line gave %d, %d; want zeros", busy, total)
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with a space and a parenthesis must not shift the
	// fields; utime (14) is 120 and stime (15) is 30.
	stat := "4242 (my (x) prog) S 1 4242 4242 0 -1 4194560 500 0 0 0 120 30 0 0 20 0 8 0 1000 0 0\n"
	if got := parseProcStat(stat); got != 150 {
		t.Errorf("parseProcStat = %d, want 150", got)
	}
	if got := parseProcStat("4242 (short) S 1 2"); got != 0 {
		t.Errorf("truncated stat gave %d, want 0", got)
	}
}

func TestCPUSub(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	before := CPUSample{at: t0, hostBusy: 100, hostTotal: 1000, server: 10, self: 20, broker: 30, redis: 40}
	after := CPUSample{at: t0.Add(2 * time.Second), hostBusy: 400, hostTotal: 2000, server: 60, self: 25, broker: 20, redis: 41}
	c := after.Sub(before)
	want := CPU{
		Wall:     2 * time.Second,
		HostBusy: 0.3,
		Server:   500 * time.Millisecond,
		Self:     50 * time.Millisecond,
		Broker:   0, // went down: the broker restarted or could not be read
		Redis:    10 * time.Millisecond,
	}
	if math.Abs(c.HostBusy-want.HostBusy) > 1e-9 {
		t.Errorf("HostBusy = %v, want %v", c.HostBusy, want.HostBusy)
	}
	c.HostBusy = want.HostBusy
	if c != want {
		t.Errorf("Sub = %+v, want %+v", c, want)
	}
}

func TestSampleCPUSeesThisProcess(t *testing.T) {
	if _, total := hostJiffies(); total == 0 {
		t.Skip("no /proc/stat on this system")
	}
	before := SampleCPU(0)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		c := SampleCPU(0).Sub(before)
		if c.Self > 0 {
			if c.Server != 0 {
				t.Errorf("Server = %v without a pid, want 0", c.Server)
			}
			return
		}
		spin(20 * time.Millisecond)
	}
	t.Fatal("5s of spinning did not show in this process's CPU time")
}

// spin burns CPU for d.
func spin(d time.Duration) {
	x := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		x++
	}
	_ = x
}
