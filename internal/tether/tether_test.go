package tether_test

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/tether"
)

// helperEnv makes the test binary the parent process of TestDiesWithParent
// (see testsupport.StartParent): it starts a child (tethered or not),
// prints "child <pid>", ends a few OS threads the way netns.Do does, says
// so, and waits to be killed.
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
		err = tether.Start(cmd)
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
	testsupport.EndThreads(8)
	fmt.Println(testsupport.ThreadsEnded)
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
			parent, child := testsupport.StartParent(t, "child", helperEnv+"="+tc.mode)
			// The child outlived the threads the parent ended.
			if !testsupport.Alive(child) {
				t.Fatalf("the child %d died while its parent lived", child)
			}
			gone := testsupport.KillParent(t, parent, child, tc.wantSurvive)
			switch {
			case tc.wantSurvive && gone:
				t.Errorf("the untethered child %d died with its parent: the check cannot tell", child)
			case !tc.wantSurvive && !gone:
				t.Errorf("the tethered child %d outlived its parent", child)
			}
		})
	}
}
