package tether

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary the parent process of TestDiesWithParent:
// it starts a child (tethered or not), prints the child's pid, ends a few
// OS threads the way netns.Do does, says so, and waits to be killed.
const helperEnv = "TETHER_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

func helper(mode string) int {
	cmd := exec.Command("sleep", "600")
	var err error
	if mode == "tethered" {
		err = Start(cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("child", cmd.Process.Pid)
	// Threads that end: a child forked from one of them with a plain
	// parent-death signal would get it now.
	for range 8 {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(done)
		}()
		<-done
	}
	fmt.Println("threads ended")
	select {}
}

// TestDiesWithParent kills a parent process with SIGKILL (as a test's
// timeout does: no cleanup runs) and sees its tethered child gone with it,
// while an untethered child, started the same way otherwise, survives: the
// check can tell the two apart.
func TestDiesWithParent(t *testing.T) {
	for _, tc := range []struct {
		mode        string
		wantSurvive bool
	}{{"tethered", false}, {"plain", true}} {
		t.Run(tc.mode, func(t *testing.T) {
			parent := exec.Command(os.Args[0], "-test.run=^$")
			parent.Env = append(os.Environ(), helperEnv+"="+tc.mode)
			out, err := parent.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := parent.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { parent.Process.Kill(); parent.Wait() })
			sc := bufio.NewScanner(out)
			child := 0
			for sc.Scan() {
				line := sc.Text()
				if pid, ok := strings.CutPrefix(line, "child "); ok {
					child, _ = strconv.Atoi(pid)
					t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
				}
				if line == "threads ended" || strings.HasPrefix(line, "error:") {
					break
				}
			}
			if child == 0 {
				t.Fatalf("the parent started no child: %v", sc.Err())
			}
			// The child outlived the threads the parent ended.
			if !alive(child) {
				t.Fatalf("the child %d died while its parent lived", child)
			}
			if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			parent.Wait()
			// The signal is sent as the parent ends, before Wait returns;
			// these waits only cover its delivery. A child that was sent
			// nothing is still there after a second.
			limit := 10 * time.Second
			if tc.wantSurvive {
				limit = time.Second
			}
			gone := waitGone(child, limit)
			switch {
			case tc.wantSurvive && gone:
				t.Errorf("the untethered child %d died with its parent: the check cannot tell", child)
			case !tc.wantSurvive && !gone:
				t.Errorf("the tethered child %d outlived its parent", child)
			}
		})
	}
}

// alive reports whether pid runs: it exists and is no zombie (a killed
// orphan stays a zombie until init reaps it).
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// waitGone waits up to limit for pid to stop running, and says whether it
// did. The signal is sent as the parent dies; the wait only covers the
// delivery.
func waitGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
