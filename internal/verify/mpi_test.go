package verify

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMPI(t *testing.T) {
	var calls []string
	ok := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		calls = append(calls, name+" "+strings.Join(args, " "))
		if name == "mpicc" {
			if _, err := os.Stat(args[len(args)-1]); err != nil {
				t.Errorf("mpicc's source: %v", err)
			}
			return nil, nil
		}
		return []byte("noise\nverify-mpi ranks 3 pingpong_us 120.5 allreduce_us 300.0 sum 3 want 3\n"), nil
	}
	dir := t.TempDir()
	r := MPI(context.Background(), ok, dir, []string{"node1", "node2", "node3"}, true)
	if !r.OK || r.Ranks != 3 || r.PingPongMicros != 120.5 || r.AllreduceMicros != 300 || r.Error != "" {
		t.Errorf("result %+v", r)
	}
	if len(calls) != 2 || !strings.Contains(calls[1], "-np 3 --host node1,node2,node3 --map-by node --allow-run-as-root") {
		t.Errorf("commands: %q", calls)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left behind in %s: %v", dir, left)
	}

	for out, want := range map[string]string{
		"verify-mpi ranks 2 pingpong_us 1 allreduce_us 1 sum 1 want 1": "MPI ran 2 ranks, want 3",
		"verify-mpi ranks 3 pingpong_us 1 allreduce_us 1 sum 2 want 3": "summed to 2, want 3",
		"ORTE was unable to reliably start":                            "mpirun printed no result: ORTE was unable",
	} {
		run := func(ctx context.Context, name string, args ...string) ([]byte, error) { return []byte(out), nil }
		if r := MPI(context.Background(), run, dir, []string{"a", "b", "c"}, false); r.OK || !strings.Contains(r.Error, want) {
			t.Errorf("%q: %+v, want an error with %q", out, r, want)
		}
	}
	failing := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		return []byte("x.c:1: error: mpi.h: No such file"), errors.New("exit status 1")
	}
	if r := MPI(context.Background(), failing, dir, []string{"a"}, false); r.OK || !strings.Contains(r.Error, "mpicc: exit status 1: x.c:1: error") {
		t.Errorf("mpicc failing: %+v", r)
	}
}

// TestMPIOnThisMachine compiles and runs the program with this machine's
// Open MPI, two ranks on localhost.
func TestMPIOnThisMachine(t *testing.T) {
	for _, tool := range []string{"mpicc", "mpirun"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs Open MPI (%s; clusterdebian doctor --fix installs it): %v", tool, err)
		}
	}
	run := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMPI_MCA_rmaps_base_oversubscribe=1")
		return cmd.CombinedOutput()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := MPI(ctx, run, t.TempDir(), []string{"localhost", "localhost"}, os.Geteuid() == 0)
	if !r.OK || r.Ranks != 2 || r.PingPongMicros <= 0 || r.AllreduceMicros <= 0 {
		t.Errorf("MPI on localhost: %+v", r)
	}
	t.Logf("%+v", r)
}
