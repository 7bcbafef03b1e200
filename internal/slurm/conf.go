// Package slurm is the cluster's job queue with no configuration: Slurm,
// as Debian packages it (22.05 in bookworm, 24.11 in trixie), with munge.
//
//   - node1's head writes slurm.conf at its start (Conf): the cluster's
//     name, node1 as the controller at its cluster address, a partition
//     holding every node, and room for dynamic nodes. slurmctld serves it
//     to every slurmd (configless), so no node has a copy to keep current.
//   - Each machine's slurmd registers itself as a dynamic node (slurmd -Z)
//     under its node name, with its cores and memory (SlurmdOptions), once
//     it has the cluster's munge key: the head makes the key at its first
//     start, like the SSH CA, and hands it to each node's agent at
//     registration (MachineFiles).
//   - Slurm follows the cluster: the head marks a node DOWN when the
//     registry does, deletes it when it is pruned or leaves (Reconcile);
//     `clusterdebian shutdown` drains the nodes first. All of it goes
//     through Controller, whose real one runs Slurm's commands.
package slurm

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Partition is the one partition: every node, node1 too unless
// slurm.node1_jobs = false (then its slurmd does not run).
const Partition = "cluster"

// ClusterName is Slurm's name for the cluster.
const ClusterName = "clusterdebian"

// Feature is the node feature every node registers with.
const Feature = "clusterdebian"

// TaskProlog is the script in the image that Slurm runs before each task
// (imagefiles/root/usr/local/lib/clusterdebian/slurm-task-prolog.sh): it
// sets aside the cluster's default MPI hostfiles inside a job, so that
// mpirun takes its hosts from the allocation.
const TaskProlog = "/usr/local/lib/clusterdebian/slurm-task-prolog.sh"

// Paths of the configuration, under the root the head keeps ("/" on
// node1): slurmctld reads them, and serves them to every slurmd.
const (
	ConfPath       = "etc/slurm/slurm.conf"
	CgroupConfPath = "etc/slurm/cgroup.conf"
)

// MaxNodeCount bounds MaxNodeCount, the dynamic nodes slurmctld makes room
// for: the subnet's hosts, but not a /16's 65534 on a LAN.
const MaxNodeCount = 1024

// Version is a Slurm release, major and minor: 22.5, 24.11.
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%02d", v.Major, v.Minor) }

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool {
	return v.Major < o.Major || (v.Major == o.Major && v.Minor < o.Minor)
}

var versionRE = regexp.MustCompile(`\b(\d+)\.(\d+)(\.\d+)?\b`)

// ParseVersion reads the version from what `slurmctld -V` or `sinfo -V`
// print ("slurm-wlm 24.11.5", "slurm 22.05.8").
func ParseVersion(s string) (Version, error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("no Slurm version in %q", strings.TrimSpace(s))
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return Version{major, minor}, nil
}

// ConfHeader starts every file Conf.Files makes: the head overwrites
// only files that start with it.
const ConfHeader = "# Written by the clusterdebian head daemon"

// Conf says what the head's slurm.conf holds.
type Conf struct {
	// Controller is node1's name and ControllerAddr its cluster address:
	// slurmctld runs there, and every slurmd fetches its configuration
	// from there.
	Controller     string
	ControllerAddr netip.Addr
	// Subnet is the cluster network: MaxNodeCount leaves room for each of
	// its hosts (up to the package's MaxNodeCount).
	Subnet netip.Prefix
	// Version is the installed Slurm's: 22.05 wants TreeWidth=65533 with
	// dynamic nodes; 24.11 wants its pid file where its unit lets the
	// slurm user write, and its cgroup plugin off.
	Version Version
	// MPI is the MPI plugin srun uses when not told (MpiDefault): MPIPMIx
	// when the machine has it (PMIxPlugin), else "none".
	MPI string
}

// MPIPMIx is Slurm's PMIx plugin: srun starts each task of an Open MPI
// program (Open MPI 4.1 in bookworm, 5 in trixie, both built on PMIx) as
// a rank, with no mpirun.
const MPIPMIx = "pmix"

// PMIxPlugin reports whether the machine under root can run MpiDefault=pmix:
// Slurm's PMIx plugin (mpi_pmix.so, in slurm-wlm-basic-plugins, which slurmd
// depends on) and the PMIx library it loads at run time from PMIx's own
// folder (pmix2/lib/libpmix.so, in libpmix-dev, which libopenmpi-dev pulls
// in: an image with MPI has it, one without does not). A plugin that
// cannot load would fail every srun, hostname too.
func PMIxPlugin(root string) bool {
	has := func(pattern string) bool {
		m, _ := filepath.Glob(filepath.Join(root, pattern))
		return len(m) > 0
	}
	return has("usr/lib/*/slurm-wlm/mpi_pmix.so") && has("usr/lib/*/pmix2/lib/libpmix.so")
}

// maxNodes is the room for dynamic nodes.
func (c Conf) maxNodes() int {
	bits := 32 - c.Subnet.Bits()
	if !c.Subnet.IsValid() || bits >= 16 {
		return MaxNodeCount
	}
	return min(1<<bits-2, MaxNodeCount)
}

// Files returns the configuration files by path (ConfPath,
// CgroupConfPath), for the installed Slurm version.
func (c Conf) Files() map[string]string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	b.WriteString(ConfHeader)
	line(" at its start; changes are lost.")
	line("# Configless: every slurmd fetches this file from slurmctld on %s. The nodes", c.Controller)
	line("# are dynamic: each registers itself (slurmd -Z) under its node name, with")
	line("# its cores and memory, and the partition %q holds every one of them.", Partition)
	line("ClusterName=%s", ClusterName)
	line("SlurmctldHost=%s(%s)", c.Controller, c.ControllerAddr)
	line("SlurmctldParameters=enable_configless")
	line("SlurmUser=slurm")
	line("AuthType=auth/munge")
	line("StateSaveLocation=/var/lib/slurm/slurmctld")
	// /var/spool is each node's own; /var/lib is node1's, shared.
	line("SlurmdSpoolDir=/var/spool/slurmd")
	if !c.Version.Less(Version{23, 2}) {
		// The unit runs slurmctld as slurm, in a /run folder of its own.
		line("SlurmctldPidFile=/run/slurmctld/slurmctld.pid")
	}
	line("MaxNodeCount=%d", c.maxNodes())
	if c.Version.Less(Version{23, 2}) {
		// Slurm 22.05 cannot fan messages out through dynamic nodes.
		line("TreeWidth=65533")
	}
	line("SelectType=select/cons_tres")
	line("SelectTypeParameters=CR_CPU")
	// No cgroups: nothing to set up on a live system, and the same on
	// both releases.
	line("ProctrackType=proctrack/linuxproc")
	line("TaskProlog=%s", TaskProlog)
	// PMIx when the image has it: plain `srun ./prog` starts an Open
	// MPI program, and a step that is none (srun hostname) only gets a
	// PMIx server it does not use. mpirun inside an allocation starts
	// its daemons with srun --mpi=none, so it is not affected.
	mpi := c.MPI
	if mpi == "" {
		mpi = "none"
	}
	line("MpiDefault=%s", mpi)
	// A node marked DOWN (the head does, when it stops heartbeating)
	// comes back when its slurmd registers again.
	line("ReturnToService=2")
	line("SlurmdTimeout=60")
	line("SchedulerType=sched/backfill")
	line("PartitionName=%s Nodes=ALL Default=YES MaxTime=INFINITE State=UP", Partition)
	files := map[string]string{ConfPath: b.String()}
	if !c.Version.Less(Version{23, 11}) {
		files[CgroupConfPath] = ConfHeader + "; changes are lost.\n" +
			"# No cgroups: processes are tracked without them (proctrack/linuxproc).\n" +
			"CgroupPlugin=disabled\n"
	}
	return files
}

// InstalledVersion returns the version of the slurmctld on this machine
// (`slurmctld -V`); an error when there is none.
func InstalledVersion(ctx context.Context) (Version, error) {
	out, err := exec.CommandContext(ctx, "slurmctld", "-V").CombinedOutput()
	if err != nil {
		return Version{}, fmt.Errorf("slurmctld -V: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return ParseVersion(string(out))
}
