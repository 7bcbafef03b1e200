// Package tether starts child processes that die with this process, however
// it ends: a clean exit, a crash, SIGKILL, or a test binary's panic at its
// `go test -timeout`, which runs no deferred calls and no t.Cleanup. The
// tests and `clusterdebian vm` without detaching use it for QEMU and for the
// servers they start, so that nothing they start outlives them.
//
// The child gets SIGKILL as its parent-death signal (prctl PR_SET_PDEATHSIG).
// Linux sends that signal when the thread that forked the child ends, not
// the process, and the Go runtime ends threads: a goroutine that exits
// while locked to its thread (netns.Do does so on purpose) takes the thread
// with it. A child forked from such a thread would be killed long before
// its parent ends. So every tethered child is forked from one thread that
// is locked to a goroutine that never returns: that thread ends only with
// the process.
package tether

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

type request struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	once     sync.Once
	requests chan request
)

// Start starts cmd like cmd.Start, with SIGKILL as its parent-death signal,
// forked from a thread that lives as long as this process. It keeps the
// rest of cmd.SysProcAttr (Setpgid, for one). Wait for cmd as usual.
//
// The signal reaches the child itself only: a child that forks keeps its
// own children unless it passes them a parent-death signal too (QEMU and
// `ip netns exec`, which execs in place, need none).
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	once.Do(func() {
		requests = make(chan request)
		go spawner()
	})
	r := request{cmd: cmd, done: make(chan error, 1)}
	requests <- r
	return <-r.done
}

// spawner forks every tethered child from its own thread, which it never
// gives back to the scheduler and never ends.
func spawner() {
	runtime.LockOSThread()
	for r := range requests {
		r.done <- r.cmd.Start()
	}
}
