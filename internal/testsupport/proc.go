package testsupport

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/tether"
)

// ProcSpec describes a long-running program a test starts: a server, a
// simulator.
type ProcSpec struct {
	What string   // for messages: "the head", "dnsmasq"
	Argv []string // program and arguments
	NS   *netns.NS
	Log  string   // file that gets its standard output and error
	Env  []string // added to this process's environment
	// MustStopCleanly fails the test when, at its end, the program does
	// not exit with status 0 within StopGrace of SIGTERM.
	MustStopCleanly bool
}

// StopGrace is how long Stop waits after SIGTERM before it kills.
const StopGrace = 20 * time.Second

// Proc is a running ProcSpec.
type Proc struct {
	Spec ProcSpec
	Cmd  *exec.Cmd

	exited  chan struct{}
	waitErr error
	stop    sync.Once
	stopErr error
}

// StartProc starts spec.Argv, inside spec.NS when set, in a process group
// of its own and tethered to this process (package tether), so that it
// dies with the test binary even when a timeout kills that. When the test
// ends, it is stopped (Stop) and, if the test failed, the tail of its log
// is logged.
func StartProc(t testing.TB, spec ProcSpec) *Proc {
	t.Helper()
	logf, err := os.Create(spec.Log)
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	if spec.NS != nil {
		// ip netns exec execs the program in place: it keeps the pid,
		// the group and the tether.
		cmd = spec.NS.Command(context.Background(), spec.Argv[0], spec.Argv[1:]...)
	} else {
		cmd = exec.Command(spec.Argv[0], spec.Argv[1:]...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if spec.Env != nil {
		cmd.Env = append(os.Environ(), spec.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := tether.Start(cmd); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", spec.What, err)
	}
	p := &Proc{Spec: spec, Cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if err := p.Stop(); err != nil && spec.MustStopCleanly {
			t.Errorf("%s did not stop cleanly: %v", spec.What, err)
		}
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", spec.What, Tail(p.Output(), 60))
		}
	})
	return p
}

// Exited is closed when the program has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Output is what the program wrote to its log so far.
func (p *Proc) Output() string {
	data, _ := os.ReadFile(p.Spec.Log)
	return string(data)
}

// Stop sends SIGTERM to the program's process group and waits for it to
// exit; after StopGrace it kills the group. It returns nil if the program
// exited by itself with status 0, on SIGTERM or before. Later calls return
// the first call's result.
func (p *Proc) Stop() error {
	p.stop.Do(func() {
		pgid := p.Cmd.Process.Pid
		select {
		case <-p.exited:
		default:
			syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(StopGrace):
				syscall.Kill(-pgid, syscall.SIGKILL)
				<-p.exited
				p.stopErr = fmt.Errorf("still running %s after SIGTERM, killed", StopGrace)
				return
			}
		}
		p.stopErr = p.waitErr
	})
	return p.stopErr
}

// Alive reports whether the process pid runs: it exists and is no zombie
// (a killed orphan stays a zombie until its new parent reaps it, which in
// a container may be never).
func Alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// WaitGone waits up to limit for pid to stop running (see Alive) and says
// whether it did.
func WaitGone(pid int, limit time.Duration) bool {
	return Poll(context.Background(), 50*time.Millisecond, limit, func() bool { return !Alive(pid) }) == nil
}
