package loadtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tdispatcher\nVmPeak:\t  900000 kB\nVmHWM:\t   41236 kB\nVmRSS:\t   40000 kB\n"
	if got, err := parseStatusKB(strings.NewReader(status), "VmHWM"); err != nil || got != 41236<<10 {
		t.Errorf("VmHWM = %d, %v; want %d", got, err, 41236<<10)
	}
	if got, err := parseStatusKB(strings.NewReader(status), "VmRSS"); err != nil || got != 40000<<10 {
		t.Errorf("VmRSS = %d, %v; want %d", got, err, 40000<<10)
	}
	if _, err := parseStatusKB(strings.NewReader("VmRSS:\t1 kB\n"), "VmHWM"); err == nil {
		t.Error("missing VmHWM: want an error")
	}
	if _, err := parseStatusKB(strings.NewReader("VmHWM:\t1 MB\n"), "VmHWM"); err == nil {
		t.Error("VmHWM in another unit: want an error")
	}
}

func TestTailKeepsTheEnd(t *testing.T) {
	tl := &tail{max: 5}
	for _, s := range []string{"abc", "defg", "hi"} {
		if n, err := tl.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := tl.String(); got != "efghi" {
		t.Errorf("tail = %q, want the last 5 bytes %q", got, "efghi")
	}
}

func needSh(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("needs a POSIX shell")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("needs sh")
	}
}

// A child that dies while starting up must say so at once, with its
// output, instead of leaving WaitHTTP to time out.
func TestWaitHTTPReportsAnExitedChild(t *testing.T) {
	needSh(t)
	c, err := Start("doomed", exec.Command("sh", "-c", "echo cannot bind >&2; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(time.Second)
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	err = c.WaitHTTP(context.Background(), "http://"+addr+"/readyz", http.StatusOK, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "doomed exited") || !strings.Contains(err.Error(), "cannot bind") {
		t.Fatalf("WaitHTTP = %v, want an exit error with the output", err)
	}
	if !c.Exited() || c.Err() == nil {
		t.Errorf("Exited %v, Err %v; want true and the exit status", c.Exited(), c.Err())
	}
	if got := c.Logs(); got != "cannot bind\n" {
		t.Errorf("Logs = %q", got)
	}
}

func TestWaitHTTPAndStop(t *testing.T) {
	needSh(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	c, err := Start("sleeper", exec.Command("sleep", "30"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(time.Second)
	if c.PID() <= 0 || c.Exited() || c.Err() != nil {
		t.Fatalf("fresh child: pid %d, exited %v, err %v", c.PID(), c.Exited(), c.Err())
	}
	if err := c.WaitHTTP(context.Background(), srv.URL, http.StatusAccepted, 5*time.Second); err != nil {
		t.Fatalf("WaitHTTP for 202: %v", err)
	}
	err = c.WaitHTTP(context.Background(), srv.URL, http.StatusOK, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not ready") || !strings.Contains(err.Error(), "202") {
		t.Fatalf("WaitHTTP for 200 from a 202 server = %v, want a timeout naming the last status", err)
	}
	if runtime.GOOS == "linux" {
		if peak, cur, err := c.Memory(); err != nil || peak <= 0 || cur <= 0 || cur > peak {
			t.Errorf("Memory = %d, %d, %v; want 0 < cur <= peak", peak, cur, err)
		}
	}
	if err := c.Stop(5 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !c.Exited() {
		t.Error("not exited after Stop")
	}
	if err := c.Stop(5 * time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestKillEndsAProcessThatIgnoresSIGTERM(t *testing.T) {
	needSh(t)
	c, err := Start("stubborn", exec.Command("sh", "-c", "trap '' TERM; while :; do sleep 1; done"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(time.Second)
	if err := c.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if !c.Exited() || c.Err() == nil || !strings.Contains(c.Err().Error(), "killed") {
		t.Fatalf("after Kill: exited %v, err %v; want ended by SIGKILL", c.Exited(), c.Err())
	}
	if err := c.Kill(); err == nil {
		t.Error("second Kill of an ended process: no error")
	}
}
