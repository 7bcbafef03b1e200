package testsupport

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests that a child dies with its parent (package tether's, and
// internal/vm's for QEMU) run this test binary again as the parent: its
// TestMain, seeing a variable the test set, starts the child, prints
// "<label> <pid>", calls EndThreads, prints ThreadsEnded and blocks; or
// prints a line starting "error:" and exits. The test (StartParent,
// KillParent) kills that parent with SIGKILL, as a test's timeout does,
// and sees whether the child went with it.

// ThreadsEnded is the line a parent prints once EndThreads returned.
const ThreadsEnded = "threads ended"

// EndThreads ends n OS threads the way netns.Do does (a goroutine that
// locks its thread and returns without unlocking it): a child forked from
// one of them with a plain parent-death signal would get it now.
func EndThreads(n int) {
	for range n {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(done)
		}()
		<-done
	}
}

// StartParent runs this test binary as a parent, running no tests, with
// env added to its environment, and reads its output until ThreadsEnded
// or an "error:" line. It returns the parent and the pid it printed after
// label, and fails the test when it printed none. Both are killed with
// SIGKILL at the end of the test.
func StartParent(t testing.TB, label string, env ...string) (parent *exec.Cmd, child int) {
	t.Helper()
	parent, child, _, _ = StartParentLines(t, label, env...)
	return parent, child
}

// StartParentLines is StartParent that also returns the lines the parent
// printed up to ThreadsEnded (seen) and those it prints after (rest,
// closed when its output ends).
func StartParentLines(t testing.TB, label string, env ...string) (parent *exec.Cmd, child int, seen []string, rest <-chan string) {
	t.Helper()
	parent = exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), env...)
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { parent.Process.Kill(); parent.Wait() })
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for line := range lines {
		seen = append(seen, line)
		if pid, ok := strings.CutPrefix(line, label+" "); ok && child == 0 {
			child, _ = strconv.Atoi(pid)
			// Whatever the outcome, the child does not outlive the test.
			t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
		}
		if line == ThreadsEnded || strings.HasPrefix(line, "error:") {
			break
		}
	}
	if child == 0 {
		t.Fatalf("the parent printed no %s pid:\n%s", label, strings.Join(seen, "\n"))
	}
	return parent, child, seen, lines
}

// KillParent kills parent with SIGKILL (failing the test if it cannot) and
// says whether child then stopped running (Alive). The signal is sent as the parent ends, before Wait
// returns; the wait (up to 10 s, or 1 s when the child should survive)
// only covers its delivery: a child that was sent nothing still runs a
// second later.
func KillParent(t testing.TB, parent *exec.Cmd, child int, survives bool) (gone bool) {
	t.Helper()
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	limit := 10 * time.Second
	if survives {
		limit = time.Second
	}
	return WaitGone(child, limit)
}
