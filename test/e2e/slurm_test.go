//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
)

// Slurm on the virtual cluster (TestVirtualCluster's steps "slurm", "node
// down", "prune" and "shutdown").

// sinfoNode is one line of `sinfo --Node`.
type sinfoNode struct {
	name, state, partition string
	cpus                   int
	memMiB                 int
}

// sinfoNodes lists the nodes slurmctld knows, as node1 sees them.
func (c vcluster) sinfoNodes(t *testing.T, ctx context.Context) []sinfoNode {
	t.Helper()
	out := c.on("node1").Sh(t, ctx, "sinfo --noheader --Node --format '%N %T %P %c %m'")
	var ns []sinfoNode
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 5 {
			continue
		}
		n := sinfoNode{name: f[0], state: f[1], partition: f[2]}
		n.cpus, _ = strconv.Atoi(f[3])
		n.memMiB, _ = strconv.Atoi(f[4])
		ns = append(ns, n)
	}
	return ns
}

// waitSinfo polls sinfo on node1 until cond holds.
func (c vcluster) waitSinfo(t *testing.T, ctx context.Context, what string, cond func([]sinfoNode) bool) []sinfoNode {
	t.Helper()
	var ns []sinfoNode
	testsupport.WaitFor(t, ctx, what, 3*time.Second, 5*time.Minute, func() bool {
		ns = c.sinfoNodes(t, ctx)
		return cond(ns)
	}, func() string { return fmt.Sprintf("sinfo: %+v", ns) })
	return ns
}

func sinfoByName(ns []sinfoNode, name string) (sinfoNode, bool) {
	i := slices.IndexFunc(ns, func(n sinfoNode) bool { return n.name == name })
	if i < 0 {
		return sinfoNode{}, false
	}
	return ns[i], true
}

// mpiBatch is the sbatch script of the "slurm" step: it waits for the test
// to see it in squeue, then runs mpirun with no hostfile in its allocation.
const mpiBatch = `#!/bin/sh
#SBATCH --job-name=e2e-mpi
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --output=/home/user/slurm-mpi-%j.out
while [ ! -e /home/user/slurm-mpi.go ]; do sleep 1; done
mpirun ./allreduce
`

// checkSlurm: with no configuration, every node (node1 too) registered
// itself into the one partition with its cores and memory; srun runs on
// all three; an sbatch of an MPI job is in squeue while it runs, and
// writes its output to the user's home.
func checkSlurm(t *testing.T, ctx context.Context, c vcluster, nodes []registry.Node) {
	g := c.on("node1")
	ns := c.waitSlurmIdle(t, ctx, nodes)
	for _, n := range nodes {
		s, _ := sinfoByName(ns, n.Name)
		if s.partition != slurm.Partition+"*" {
			t.Errorf("%s is in partition %q, want %q (the default)", n.Name, s.partition, slurm.Partition+"*")
		}
		if s.cpus != n.Cores {
			t.Errorf("%s: Slurm has %d CPUs, the registry %d cores", n.Name, s.cpus, n.Cores)
		}
		// slurmd counts the machine's memory in MiB as the kernel does
		// (it leaves out none of it): at most MemTotal, and not less than
		// 90% of it.
		if total := int(n.MemTotalKiB / 1024); s.memMiB > total+1 || s.memMiB < total*9/10 {
			t.Errorf("%s: Slurm has %d MiB of memory, /proc/meminfo %d MiB", n.Name, s.memMiB, total)
		}
	}
	if len(ns) != len(nodes) {
		t.Errorf("Slurm has %d nodes, the registry %d: %+v", len(ns), len(nodes), ns)
	}

	checkSrunHostname(t, ctx, g, nodes)

	// sbatch of an MPI job: mpirun takes its hosts from the allocation.
	compileMPI(t, ctx, g)
	g.Sh(t, ctx, "rm -f /home/user/slurm-mpi.go; cat > /home/user/mpi.sbatch <<'EOF'\n"+mpiBatch+"EOF\nchown user: /home/user/mpi.sbatch")
	sub := g.Sh(t, ctx, "cd /home/user && runuser -u user -- sbatch --parsable mpi.sbatch")
	id := strings.TrimSpace(sub)
	if _, err := strconv.Atoi(id); err != nil {
		t.Fatalf("sbatch answered %q, want a job id", sub)
	}
	var queue string
	testsupport.WaitFor(t, ctx, "the job running in squeue", 2*time.Second, 5*time.Minute, func() bool {
		queue = g.Sh(t, ctx, "squeue --noheader --format '%i %u %T %D %j'")
		return regexp.MustCompile(`(?m)^\s*` + id + ` user RUNNING 3 e2e-mpi$`).MatchString(queue)
	}, func() string { return "squeue: " + queue })
	// status lists the running job: id, user, name, state, nodes (the
	// head reads the queue every head.SlurmSyncInterval).
	var status string
	jobLine := regexp.MustCompile(`(?m)^\s+` + id + ` user e2e-mpi RUNNING \S+ \S+$`)
	testsupport.WaitFor(t, ctx, "status to list the running job", 2*time.Second, 2*time.Minute, func() bool {
		status = g.Sh(t, ctx, "clusterdebian status")
		return jobLine.MatchString(status)
	}, func() string { return status })
	g.Sh(t, ctx, "runuser -u user -- touch /home/user/slurm-mpi.go")
	var state string
	testsupport.WaitFor(t, ctx, "the job to end", 3*time.Second, 10*time.Minute, func() bool {
		state = g.Sh(t, ctx, "scontrol show job "+id+" | grep -o 'JobState=[A-Z_]*'")
		return !strings.Contains(state, "RUNNING") && !strings.Contains(state, "PENDING") && !strings.Contains(state, "COMPLETING")
	}, func() string { return state })
	if strings.TrimSpace(state) != "JobState=COMPLETED" {
		t.Errorf("job %s ended %s, want COMPLETED", id, strings.TrimSpace(state))
	}
	res := g.Sh(t, ctx, "cat /home/user/slurm-mpi-"+id+".out; stat -c %U /home/user/slurm-mpi-"+id+".out")
	t.Logf("sbatch output:\n%s", res)
	checkRanks(t, "the sbatch MPI job", res, nodes)
	if !strings.HasSuffix(strings.TrimSpace(res), "\nuser") {
		t.Errorf("the job's output is not the user's:\n%s", res)
	}

	// srun starts the MPI program itself, no mpirun (MpiDefault=pmix).
	checkSrunMPI(t, ctx, g, nodes)

	// status shows each node's Slurm state (the head reads it every
	// head.SlurmSyncInterval).
	testsupport.WaitFor(t, ctx, "status to show every node idle in Slurm", 3*time.Second, 2*time.Minute, func() bool {
		status = g.Sh(t, ctx, "clusterdebian status")
		i := strings.Index(status, "\nSlurm: ")
		if i < 0 {
			return false
		}
		line, _, _ := strings.Cut(status[i+1:], "\n")
		for _, n := range nodes {
			if !regexp.MustCompile(`\b` + n.Name + ` idle\b`).MatchString(line) {
				return false
			}
		}
		return true
	}, func() string { return status })
}

// waitSlurmIdle waits until every one of nodes is idle in Slurm, and
// returns sinfo's nodes.
func (c vcluster) waitSlurmIdle(t *testing.T, ctx context.Context, nodes []registry.Node) []sinfoNode {
	t.Helper()
	return c.waitSinfo(t, ctx, "every node idle in Slurm", func(ns []sinfoNode) bool {
		for _, n := range nodes {
			s, ok := sinfoByName(ns, n.Name)
			if !ok || s.state != "idle" {
				return false
			}
		}
		return true
	})
}

// checkSrunHostname: srun as the user, one task on each node, names
// every node once.
func checkSrunHostname(t *testing.T, ctx context.Context, g testsupport.Guest, nodes []registry.Node) {
	t.Helper()
	out := g.Sh(t, ctx, fmt.Sprintf("cd /home/user && runuser -u user -- srun -N %d --ntasks-per-node=1 hostname", len(nodes)))
	got := strings.Fields(out)
	slices.Sort(got)
	var want []string
	for _, n := range nodes {
		want = append(want, n.Name)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("srun -N %d hostname names %v, want %v", len(nodes), got, want)
	}
}

// checkSrunMPI: plain srun, as the user, starts the allreduce program
// (compileMPI) as one rank on each node: srun's MPI plugin (MpiDefault,
// PMIx) wires the ranks up with no mpirun and no hostfile.
func checkSrunMPI(t *testing.T, ctx context.Context, g testsupport.Guest, nodes []registry.Node) {
	t.Helper()
	g.Sh(t, ctx, "grep -x MpiDefault=pmix /etc/slurm/slurm.conf")
	out, code := g.Try(t, ctx, fmt.Sprintf("cd /home/user && runuser -u user -- srun -N %d --ntasks-per-node=1 ./allreduce 2>&1", len(nodes)))
	t.Logf("srun ./allreduce (exit %d):\n%s", code, out)
	if code != 0 {
		t.Errorf("srun ./allreduce exited %d", code)
	}
	checkRanks(t, "srun ./allreduce", out, nodes)
}

// checkRanks: the allreduce program's output (mpiProgram) has one rank
// on each of nodes, each with the sum of all ranks.
func checkRanks(t *testing.T, what, out string, nodes []registry.Node) {
	t.Helper()
	n := len(nodes)
	sum := n * (n - 1) / 2
	ranks := regexp.MustCompile(fmt.Sprintf(`rank (\d+) of %d on (\S+) sum %d\b`, n, sum)).FindAllStringSubmatch(out, -1)
	hosts := map[string]bool{}
	for _, r := range ranks {
		hosts[r[2]] = true
	}
	for _, nd := range nodes {
		if !hosts[nd.Name] {
			t.Errorf("%s: no rank on %s", what, nd.Name)
		}
	}
	if len(ranks) != n || len(hosts) != n {
		t.Errorf("%s: %d ranks on %d hosts, want %d on %d, each with sum %d:\n%s", what, len(ranks), len(hosts), n, n, sum, out)
	}
}

// waitSlurmDown waits until Slurm has node down.
func (c vcluster) waitSlurmDown(t *testing.T, ctx context.Context, node string) {
	t.Helper()
	c.waitSinfo(t, ctx, node+" down in Slurm", func(ns []sinfoNode) bool {
		n, ok := sinfoByName(ns, node)
		return ok && strings.HasPrefix(n.state, "down")
	})
}

// checkSlurmGone: after prune, sinfo no longer lists node.
func (c vcluster) checkSlurmGone(t *testing.T, ctx context.Context, node string) {
	t.Helper()
	if n, ok := sinfoByName(c.sinfoNodes(t, ctx), node); ok {
		t.Errorf("sinfo still lists %s (%s) after prune", node, n.state)
	}
}

// checkSlurmShutdownPlan: shutdown --dry-run says it drains node1 and
// node (the nodes left) in Slurm first, and that no job runs.
func checkSlurmShutdownPlan(t *testing.T, plan, node string) {
	t.Helper()
	if !regexp.MustCompile(`Slurm: drain node\S*`+strings.TrimPrefix(node, "node")).MatchString(plan) ||
		!strings.Contains(plan, "Slurm: no job is running") {
		t.Errorf("shutdown --dry-run does not plan to drain node1 and %s in Slurm, with no job running:\n%s", node, plan)
	}
}

// checkSlurmShutdownDone: the real shutdown drained them, on node1's
// console.
func checkSlurmShutdownDone(t *testing.T, serial, node string) {
	t.Helper()
	if !regexp.MustCompile(`Slurm: drained node\S*` + strings.TrimPrefix(node, "node")).MatchString(serial) {
		t.Errorf("node1's console does not show node1 and %s drained in Slurm:\n%s", node, tail(serial, 40))
	}
}

// checkSlurmInImage: the default image has Slurm and munge, the units'
// drop-ins and the task prolog, and no munge key: each cluster makes its
// own at node1's first start.
func checkSlurmInImage(t *testing.T, out string) {
	t.Helper()
	list, err := exec.Command("unsquashfs", "-l", filepath.Join(out, "netboot", contract.BaseLayer)).Output()
	if err != nil {
		t.Fatalf("unsquashfs -l: %v", err)
	}
	files := map[string]bool{}
	for l := range strings.SplitSeq(string(list), "\n") {
		files[strings.TrimPrefix(l, "squashfs-root")] = true
	}
	for _, want := range []string{"/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/srun", "/usr/bin/sbatch", "/usr/sbin/munged"} {
		if !files[want] {
			t.Errorf("base layer lacks %s", want)
		}
	}
	// What the head's MpiDefault=pmix needs (slurm.PMIxPlugin): Slurm's
	// PMIx plugin and the library it loads.
	for _, want := range []string{`^/usr/lib/[^/]+/slurm-wlm/mpi_pmix\.so$`, `^/usr/lib/[^/]+/pmix2/lib/libpmix\.so$`} {
		re := regexp.MustCompile(want)
		if !slices.ContainsFunc(slices.Collect(maps.Keys(files)), re.MatchString) {
			t.Errorf("base layer has no file matching %s: srun cannot start MPI programs", want)
		}
	}
	if files["/etc/munge/munge.key"] {
		t.Error("base layer holds a munge key: every cluster of this image would share it")
	}
	custom := filepath.Join(out, "netboot", contract.CustomLayer)
	for _, want := range []string{"/etc/systemd/system/munge.service.d/clusterdebian.conf", "/etc/systemd/system/slurmctld.service.d/clusterdebian.conf",
		"/etc/systemd/system/slurmd.service.d/clusterdebian.conf", slurm.TaskProlog} {
		if _, err := layerFile(custom, want); err != nil {
			t.Errorf("custom layer lacks %s: %v", want, err)
		}
	}
}
