//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// ramConfig is a bookworm image (the last suite with PVM) with MPI and PVM,
// whose nodes run from RAM.
const ramConfig = `[image]
suite = "bookworm"

[cluster]
parallel = ["mpi", "pvm"]

[nodes]
root = "ram"
`

var (
	ramOnce   sync.Once
	ramOut    string
	ramReport *imagebuild.Report
)

// ramImage builds the RAM-root bookworm image once per run.
func ramImage(t *testing.T) string {
	t.Helper()
	ramOnce.Do(func() {
		out := filepath.Join(workDir, "ram")
		cfg := filepath.Join(workDir, "ram.toml")
		if err := os.WriteFile(cfg, []byte(ramConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		ramReport = build(t, out, "--config", cfg)
		ramOut = out
	})
	if ramReport == nil {
		t.Fatal("the RAM-root image did not build (see the first test's log)")
	}
	return ramOut
}

// pvmTask is a PVM "task" that says where it runs. PVM looks for tasks in
// ~/pvm3/bin/$PVM_ARCH, which every node sees through the shared /home.
const pvmTask = "#!/bin/sh\necho \"task on $(hostname)\"\n"

// TestRAMRootPVM boots node1 from the bookworm RAM-root image and two nodes
// that fetch the image into their RAM: they join, /home is node1's on every
// node, the cluster files reach them through their agents, MPI runs across
// them, and PVM adds every node and spawns a task on a remote one. Then the
// whole cluster is shut down with `clusterdebian shutdown`.
func TestRAMRootPVM(t *testing.T) {
	out := ramImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()

	const name = "e2e-ram"
	if old, err := vm.LoadCluster(name); err == nil {
		old.Down()
	}
	vc, err := vm.Up(ctx, vm.UpOptions{Name: name, ISO: filepath.Join(out, imagebuild.ISOName), Nodes: 2, Accel: "tcg",
		MemoryMiB: 2048, NodeMemoryMiB: 2048, CPUs: 1, Progress: testWriter{t}})
	if err != nil {
		t.Fatalf("vm up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range vc.Machines() {
				t.Logf("%s serial console tail:\n%s", m.Name, tail(m.Serial(), 60))
			}
		}
		if err := vc.Down(); err != nil {
			t.Errorf("vm down: %v", err)
		}
	})
	c := cluster{t, vc}

	nodes := c.waitNodes(ctx, "three nodes up", func(ns []registry.Node) bool { return len(upNodes(ns)) == 3 })
	var others []string
	for _, n := range nodes {
		if n.Name != "node1" {
			others = append(others, n.Name)
		}
	}
	if len(others) != 2 {
		t.Fatalf("want node1 and two nodes, registry has %+v", nodes)
	}
	a, b := others[0], others[1]

	// Each node runs from its own RAM copy, with node1's /home over NFS.
	for _, n := range others {
		if got := strings.TrimSpace(c.sh(ctx, n, "hostname")); got != n {
			t.Errorf("%s calls itself %q", n, got)
		}
		mounts := c.sh(ctx, n, "cat /proc/cmdline; findmnt -n -o FSTYPE,SOURCE /; findmnt -n -o FSTYPE,SOURCE /home")
		if !strings.Contains(mounts, "clusterdebian.root=ram") || regexp.MustCompile(`(?m)^nfs\S* .*:/$`).MatchString(mounts) {
			t.Errorf("%s does not run from RAM:\n%s", n, mounts)
		}
		if !regexp.MustCompile(`(?m)^nfs4? +10\.99\.0\.1:/home$`).MatchString(mounts) {
			t.Errorf("%s: /home is not node1's over NFS:\n%s", n, mounts)
		}
		// The cluster files reached it through its agent.
		hosts := c.sh(ctx, n, "cat /etc/hosts /etc/cluster/mpi.hosts /etc/cluster/pvm.hosts")
		for _, m := range nodes {
			if !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(m.IP)+`\s+`+m.Name+`\b`).MatchString(hosts) ||
				!regexp.MustCompile(`(?m)^`+m.Name+` slots=`).MatchString(hosts) {
				t.Errorf("%s's cluster files lack %s (%s):\n%s", n, m.Name, m.IP, hosts)
			}
		}
	}

	// /home is shared: written on one node, read on the others.
	stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
	c.sh(ctx, a, "runuser -u user -- sh -c 'echo "+stamp+" > /home/user/ram-"+stamp+"'")
	for _, n := range []string{"node1", b} {
		// As the user: root on a node is squashed on node1's /home.
		if got := strings.TrimSpace(c.sh(ctx, n, "runuser -u user -- cat /home/user/ram-"+stamp)); got != stamp {
			t.Errorf("%s sees %q in the file %s wrote in /home", n, got, a)
		}
	}
	// Root on a node is not root on node1's /home.
	if out, code := c.try(ctx, a, "touch /home/root-was-here"); code == 0 {
		t.Errorf("root on %s could write to node1's /home:\n%s", a, out)
	}

	// SSH by name between the RAM nodes, verified by the cluster CA.
	if got := strings.TrimSpace(c.sh(ctx, a, "runuser -u user -- ssh -o BatchMode=yes "+b+" hostname")); got != b {
		t.Errorf("ssh %s hostname from %s = %q", b, a, got)
	}

	// MPI across the three machines, started on a node.
	c.sh(ctx, "node1", "cat > /home/user/allreduce.c <<'EOF'\n"+mpiProgram+"EOF\nchown user: /home/user/allreduce.c")
	c.sh(ctx, "node1", "cd /home/user && runuser -u user -- mpicc -o allreduce allreduce.c")
	mpi := c.sh(ctx, a, "runuser -u user -- sh -c 'cd /home/user && mpirun -np 3 ./allreduce'")
	t.Logf("mpirun on %s:\n%s", a, mpi)
	ranks := regexp.MustCompile(`rank (\d+) of 3 on (\S+) sum 3`).FindAllStringSubmatch(mpi, -1)
	hostsSeen := map[string]bool{}
	for _, r := range ranks {
		hostsSeen[r[2]] = true
	}
	if len(ranks) != 3 || len(hostsSeen) != 3 {
		t.Errorf("want 3 ranks summing to 3 on 3 hosts, got %d ranks on %v:\n%s", len(ranks), hostsSeen, mpi)
	}

	// PVM: the hostfile adds every node (conf lists them), and a task
	// spawned on a remote node reports that node's name.
	c.sh(ctx, "node1", "install -d -o user -g user /home/user/pvm3 /home/user/pvm3/bin /home/user/pvm3/bin/LINUX64 && "+
		"printf '"+strings.ReplaceAll(pvmTask, "\n", `\n`)+"' > /home/user/pvm3/bin/LINUX64/whereami && "+
		"chown user: /home/user/pvm3/bin/LINUX64/whereami && chmod 755 /home/user/pvm3/bin/LINUX64/whereami")
	// The console prints a task's output when it next reads a command, and
	// halt ends it with its buffers unflushed: hence stdbuf, and a conf
	// after the wait.
	pvm := c.sh(ctx, "node1", `cd /home/user && runuser -u user -- sh -c '
{ echo conf; echo "spawn -`+b+` -> whereami"; sleep 15; echo conf; sleep 2; echo halt; } | timeout 300 stdbuf -oL -eL pvm ~/pvm.hosts 2>&1' || true`)
	t.Logf("pvm:\n%s", pvm)
	for _, n := range nodes {
		if !regexp.MustCompile(`(?m)^\s*` + n.Name + `\s`).MatchString(pvm) {
			t.Errorf("pvm conf does not list %s", n.Name)
		}
	}
	if !strings.Contains(pvm, "task on "+b) {
		t.Errorf("the PVM task spawned on %s did not report %q", b, "task on "+b)
	}

	// shutdown: every node powers off, node1 last, and the VMs stop. It
	// runs detached, as node1 powers itself off under it; its report goes
	// to node1's serial console.
	c.sh(ctx, "node1", "systemd-run --unit=e2e-shutdown --no-block sh -c 'clusterdebian shutdown > /dev/ttyS0 2>&1'")
	waitAllStopped(ctx, t, vc, 10*time.Minute)
	serial := vc.Machines()[0].Serial()
	if !strings.Contains(serial, "2 node(s) confirmed") || !strings.Contains(serial, "power off this machine (node1)") {
		t.Errorf("node1's console does not show both nodes confirmed before node1 went:\n%s", tail(serial, 40))
	}
}

// waitAllStopped waits until `vm list` shows every VM of vc stopped.
func waitAllStopped(ctx context.Context, t *testing.T, vc *vm.Cluster, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var running []string
		for _, v := range vc.List(ctx) {
			if v.Running {
				running = append(running, v.VM)
			}
		}
		if len(running) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("these VMs still run %s after the shutdown: %v", limit, running)
		}
		time.Sleep(3 * time.Second)
	}
}
