package verify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// mpiProgram times a ping-pong of 8 bytes between rank 0 and every other
// rank, and a one-integer MPI_Allreduce across all ranks, and checks the
// sum.
const mpiProgram = `#include <mpi.h>
#include <stdio.h>
#define ITER 50
int main(int argc, char **argv) {
	int rank, size, i, r, sum = 0, want;
	double buf = 0, worst = 0, t, ar;
	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	for (r = 1; r < size; r++) {
		MPI_Barrier(MPI_COMM_WORLD);
		t = MPI_Wtime();
		for (i = 0; i < ITER; i++) {
			if (rank == 0) {
				MPI_Send(&buf, 1, MPI_DOUBLE, r, 0, MPI_COMM_WORLD);
				MPI_Recv(&buf, 1, MPI_DOUBLE, r, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
			} else if (rank == r) {
				MPI_Recv(&buf, 1, MPI_DOUBLE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
				MPI_Send(&buf, 1, MPI_DOUBLE, 0, 0, MPI_COMM_WORLD);
			}
		}
		t = (MPI_Wtime() - t) / ITER / 2 * 1e6;
		if (t > worst) worst = t;
	}
	MPI_Barrier(MPI_COMM_WORLD);
	t = MPI_Wtime();
	for (i = 0; i < ITER; i++)
		MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	ar = (MPI_Wtime() - t) / ITER * 1e6;
	want = size * (size - 1) / 2;
	if (rank == 0)
		printf("verify-mpi ranks %d pingpong_us %.1f allreduce_us %.1f sum %d want %d\n", size, worst, ar, sum, want);
	MPI_Finalize();
	return sum == want ? 0 : 1;
}
`

// Runner runs a program and returns its standard output and error,
// interleaved (exec.CommandContext(...).CombinedOutput on a real host).
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// MPI compiles the test program with mpicc in a new folder under dir,
// which every node must see at the same path (/home on a cluster), runs it
// with one rank on each of hosts, and removes the folder. asRoot adds what
// Open MPI needs to run as root.
func MPI(ctx context.Context, run Runner, dir string, hosts []string, asRoot bool) *MPIResult {
	res := &MPIResult{Ranks: len(hosts)}
	fail := func(format string, args ...any) *MPIResult {
		res.Error = fmt.Sprintf(format, args...)
		return res
	}
	tmp, err := os.MkdirTemp(dir, ".clusterdebian-verify-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(tmp)
	// Readable by every user, whom an NFS-mounted /home may map root to.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fail("%v", err)
	}
	src, bin := filepath.Join(tmp, "verify.c"), filepath.Join(tmp, "verify")
	if err := os.WriteFile(src, []byte(mpiProgram), 0o644); err != nil {
		return fail("%v", err)
	}
	if out, err := run(ctx, "mpicc", "-O2", "-o", bin, src); err != nil {
		return fail("mpicc: %v: %s", err, lastLines(out, 5))
	}
	args := []string{"-np", strconv.Itoa(len(hosts)), "--host", strings.Join(hosts, ","), "--map-by", "node"}
	if asRoot {
		args = append(args, "--allow-run-as-root")
	}
	out, err := run(ctx, "mpirun", append(args, bin)...)
	if err != nil {
		return fail("mpirun: %v: %s", err, lastLines(out, 5))
	}
	if err := res.parse(out); err != nil {
		return fail("%v", err)
	}
	return res
}

var mpiLine = regexp.MustCompile(`verify-mpi ranks (\d+) pingpong_us ([0-9.]+) allreduce_us ([0-9.]+) sum (-?\d+) want (\d+)`)

// parse reads the program's line into res; OK when the ranks and the sum
// are right.
func (res *MPIResult) parse(out []byte) error {
	m := mpiLine.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("mpirun printed no result: %s", lastLines(out, 5))
	}
	ranks, _ := strconv.Atoi(string(m[1]))
	res.PingPongMicros, _ = strconv.ParseFloat(string(m[2]), 64)
	res.AllreduceMicros, _ = strconv.ParseFloat(string(m[3]), 64)
	if ranks != res.Ranks {
		return fmt.Errorf("MPI ran %d ranks, want %d", ranks, res.Ranks)
	}
	if string(m[4]) != string(m[5]) {
		return fmt.Errorf("MPI_Allreduce summed to %s, want %s", m[4], m[5])
	}
	res.OK = true
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
