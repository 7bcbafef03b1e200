package vm_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// parentEnv makes the test binary the parent of TestQEMUDiesWithParent: it
// starts a machine with vm.Start (detached or not, per the variable's
// value), prints QEMU's pid, ends a few OS threads as netns.Do does, and
// waits to be killed.
const parentEnv = "VM_TEST_QEMU_PARENT"

func TestMain(m *testing.M) {
	if mode := os.Getenv(parentEnv); mode != "" {
		os.Exit(qemuParent(mode))
	}
	os.Exit(m.Run())
}

func qemuParent(mode string) int {
	dir, err := os.MkdirTemp("", "vm-parent-")
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	m, err := vm.Start(vm.Spec{Name: "parent-test", Dir: dir, MemoryMiB: 256, Detach: mode == "detached"})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("qemu", m.PID())
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

// TestQEMUDiesWithParent kills the process that started a machine with
// SIGKILL, as a `go test -timeout` panic ends a test binary without
// running its cleanup, and sees QEMU gone with it; a detached machine,
// started the same way otherwise, survives, so the check can tell. It
// runs a stand-in for QEMU everywhere, and the real QEMU (no disk, it
// idles in its firmware) where it is installed.
func TestQEMUDiesWithParent(t *testing.T) {
	standIn := t.TempDir()
	if err := os.WriteFile(filepath.Join(standIn, "qemu-system-x86_64"), []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, mode, path string
		survives         bool
	}{
		{"stand-in attached", "attached", standIn + ":" + os.Getenv("PATH"), false},
		{"stand-in detached", "detached", standIn + ":" + os.Getenv("PATH"), true},
		{"qemu attached", "attached", os.Getenv("PATH"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.HasPrefix(tc.name, "stand-in") {
				if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
					t.Skip("qemu-system-x86_64 is not installed (clusterdebian doctor --fix installs it); the stand-in cases ran")
				}
			}
			parent := exec.Command(os.Args[0], "-test.run=^$")
			parent.Env = append(os.Environ(), parentEnv+"="+tc.mode, "PATH="+tc.path)
			out, err := parent.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := parent.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { parent.Process.Kill(); parent.Wait() })
			qemu := 0
			var lines []string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				lines = append(lines, line)
				if pid, ok := strings.CutPrefix(line, "qemu "); ok {
					qemu, _ = strconv.Atoi(pid)
					// Whatever the outcome, no QEMU outlives this test.
					t.Cleanup(func() { syscall.Kill(qemu, syscall.SIGKILL) })
				}
				if line == "threads ended" || strings.HasPrefix(line, "error:") {
					break
				}
			}
			if qemu == 0 {
				t.Fatalf("the parent started no machine: %v\n%s", sc.Err(), strings.Join(lines, "\n"))
			}
			if !testsupport.Alive(qemu) {
				t.Fatalf("QEMU (pid %d) died while its parent lived", qemu)
			}
			if !strings.HasPrefix(tc.name, "stand-in") {
				if cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(qemu) + "/cmdline"); !strings.Contains(string(cmdline), "qemu-system-x86_64") {
					t.Fatalf("pid %d is not QEMU: %q", qemu, cmdline)
				}
			}
			parent.Process.Signal(syscall.SIGKILL)
			parent.Wait()
			// The signal is sent as the parent ends, before Wait returns;
			// the wait only covers its delivery. A machine that was sent
			// nothing still runs a second later.
			limit := 10 * time.Second
			if tc.survives {
				limit = time.Second
			}
			gone := testsupport.WaitGone(qemu, limit)
			switch {
			case tc.survives && gone:
				t.Errorf("the detached machine (pid %d) died with its parent: the check cannot tell", qemu)
			case !tc.survives && !gone:
				t.Errorf("QEMU (pid %d) outlived the process that started it", qemu)
			}
		})
	}
}
