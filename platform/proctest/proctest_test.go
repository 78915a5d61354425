package proctest

import (
	"net"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
)

func TestBuildStartReadyKill(t *testing.T) {
	bin := Build(t, "testdata/ready")
	if again := Build(t, "./testdata/ready"); again != bin {
		t.Errorf("second Build = %s, want the first binary %s", again, bin)
	}
	addr, err := loadtest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p := Start(t, bin, "PROCTEST_ADDR="+addr)
	p.WaitReady("http://"+addr+"/readyz", 60*time.Second)
	p.Kill()
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		c.Close()
		t.Fatal("the port still answers after Kill")
	}
	// A killed process starts again from the same binary.
	p = Start(t, bin, "PROCTEST_ADDR="+addr)
	p.WaitReady("http://"+addr+"/readyz", 60*time.Second)
}
