//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// cluster wraps a virtual cluster with test helpers.
type cluster struct {
	t *testing.T
	*vm.Cluster
}

// sh runs a bash command as root on a VM and fails the test if it fails.
func (c cluster) sh(ctx context.Context, node, script string) string {
	c.t.Helper()
	out, code := c.try(ctx, node, script)
	if code != 0 {
		c.t.Fatalf("%s: %q exited %d:\n%s", node, script, code, out)
	}
	return out
}

// try runs a bash command as root on a VM and returns its output and exit code.
func (c cluster) try(ctx context.Context, node, script string) (string, int) {
	c.t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	stdout, stderr, code, err := c.Exec(cctx, node, "/bin/bash", "-c", script)
	if err != nil {
		c.t.Fatalf("%s: exec %q: %v", node, script, err)
	}
	return stdout + stderr, code
}

// nodes returns the head's registry as `clusterdebian status --json` shows it.
func (c cluster) nodes(ctx context.Context) []registry.Node {
	c.t.Helper()
	out, code := c.try(ctx, "node1", "/usr/local/bin/clusterdebian status --json")
	if code != 0 {
		return nil
	}
	var nodes []registry.Node
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		c.t.Logf("status --json: %v: %s", err, out)
		return nil
	}
	return nodes
}

// waitNodes polls the registry until cond holds; the deadline only guards
// against a hang.
func (c cluster) waitNodes(ctx context.Context, what string, cond func([]registry.Node) bool) []registry.Node {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Minute)
	for {
		nodes := c.nodes(ctx)
		if cond(nodes) {
			return nodes
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting for %s: registry is %+v", what, nodes)
		}
		time.Sleep(3 * time.Second)
	}
}

func upNodes(nodes []registry.Node) []registry.Node {
	var up []registry.Node
	for _, n := range nodes {
		if n.State == "up" {
			up = append(up, n)
		}
	}
	return up
}

const mpiProgram = `#include <mpi.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
	int rank, size, sum;
	char host[256];
	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	gethostname(host, sizeof host);
	MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	printf("rank %d of %d on %s sum %d\n", rank, size, host, sum);
	MPI_Finalize();
	return 0;
}
`

// TestVirtualCluster boots node1 from the default ISO and two nodes from the
// network, and checks that they form one cluster: names, cluster files,
// shared root, SSH trust, MPI across nodes, exec, failure, prune, head
// restart, and finally a real shutdown of the whole cluster.
func TestVirtualCluster(t *testing.T) {
	out, _ := defaultImage(t)
	iso := filepath.Join(out, imagebuild.ISOName)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()

	const name = "e2e"
	if old, err := vm.LoadCluster(name); err == nil {
		old.Down()
	}
	vc, err := vm.Up(ctx, vm.UpOptions{Name: name, ISO: iso, Nodes: 2, Accel: "tcg",
		MemoryMiB: 2048, NodeMemoryMiB: 1536, CPUs: 2, Progress: testWriter{t}})
	if err != nil {
		t.Fatalf("vm up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range vc.Machines() {
				t.Logf("%s serial console tail:\n%s", m.Name, tail(m.Serial(), 40))
			}
		}
		if err := vc.Down(); err != nil {
			t.Errorf("vm down: %v", err)
		}
	})
	c := cluster{t, vc}

	// All three register, named after the last octet of their address.
	nodes := c.waitNodes(ctx, "three nodes up", func(ns []registry.Node) bool { return len(upNodes(ns)) == 3 })
	var names []string
	for _, n := range nodes {
		last := n.IP[strings.LastIndex(n.IP, ".")+1:]
		if n.Name != "node"+last {
			t.Errorf("node %s has address %s: want name node%s", n.Name, n.IP, last)
		}
		names = append(names, n.Name)
		if got := strings.TrimSpace(c.sh(ctx, n.Name, "hostname")); got != n.Name {
			t.Errorf("%s calls itself %q", n.Name, got)
		}
		if cores := strings.TrimSpace(c.sh(ctx, n.Name, "nproc")); cores != strconv.Itoa(n.Cores) {
			t.Errorf("%s: registry says %d cores, nproc says %s", n.Name, n.Cores, cores)
		}
		if mem := strings.TrimSpace(c.sh(ctx, n.Name, "awk '/^MemTotal:/ {print $2}' /proc/meminfo")); mem != strconv.FormatUint(n.MemTotalKiB, 10) {
			t.Errorf("%s: registry says %d KiB of memory, /proc/meminfo says %s", n.Name, n.MemTotalKiB, mem)
		}
	}
	sort.Strings(names)
	if !contains(names, "node1") {
		t.Fatalf("the head is not node1: %v", names)
	}
	var others []string
	for _, n := range names {
		if n != "node1" {
			others = append(others, n)
		}
	}
	a, b := others[0], others[1]
	t.Logf("cluster: %v", names)

	// The head saw every node through its boot, up to registration.
	boot := c.sh(ctx, "node1", `exec 3<>/dev/tcp/127.0.0.1/80
printf 'GET /api/v1/boot HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
cat <&3`)
	var stages []bootstage.Node
	if _, body, ok := strings.Cut(boot, "\r\n\r\n"); !ok || json.Unmarshal([]byte(body), &stages) != nil {
		t.Errorf("/api/v1/boot: cannot read %q", boot)
	}
	for _, n := range nodes {
		if n.Name == "node1" {
			continue
		}
		seen := false
		for _, s := range stages {
			for _, e := range s.History {
				seen = seen || (s.IP == n.IP && e.Stage == bootstage.Registered)
			}
		}
		if !seen {
			t.Errorf("boot stages do not show %s (%s) registered:\n%s", n.Name, n.IP, boot)
		}
	}

	// Cluster files list all three, slots = cores.
	hosts := c.sh(ctx, "node1", "cat /etc/hosts")
	mpiHosts := c.sh(ctx, "node1", "cat /etc/cluster/mpi.hosts")
	for _, n := range nodes {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n.IP) + `\s+` + n.Name + `\b`).MatchString(hosts) {
			t.Errorf("/etc/hosts lacks %s %s:\n%s", n.IP, n.Name, hosts)
		}
		if !regexp.MustCompile(`(?m)^` + n.Name + ` slots=` + strconv.Itoa(n.Cores) + `$`).MatchString(mpiHosts) {
			t.Errorf("mpi.hosts lacks %q:\n%s", fmt.Sprintf("%s slots=%d", n.Name, n.Cores), mpiHosts)
		}
	}

	// Sharing: a file written on one node is seen on the other two.
	stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
	c.sh(ctx, a, "echo "+stamp+" > /home/user/shared-"+stamp)
	for _, n := range []string{"node1", b} {
		if got := strings.TrimSpace(c.sh(ctx, n, "cat /home/user/shared-"+stamp)); got != stamp {
			t.Errorf("%s sees %q in the file %s wrote", n, got, a)
		}
	}
	// A package installed with apt on node1 from a local .deb runs on a node.
	c.sh(ctx, "node1", `set -e; d=$(mktemp -d); mkdir -p $d/pkg/DEBIAN $d/pkg/usr/local/bin
printf 'Package: cdtest-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.org>\nDescription: e2e test package\n' > $d/pkg/DEBIAN/control
printf '#!/bin/sh\necho hello from $(hostname)\n' > $d/pkg/usr/local/bin/cdtest-hello
chmod 755 $d/pkg/usr/local/bin/cdtest-hello
dpkg-deb --build $d/pkg $d/cdtest-hello.deb
DEBIAN_FRONTEND=noninteractive apt-get install -y $d/cdtest-hello.deb`)
	if got := strings.TrimSpace(c.sh(ctx, b, "cdtest-hello")); got != "hello from "+b {
		t.Errorf("the package installed on node1 says %q on %s", got, b)
	}

	// SSH: as the default user, nodeA -> nodeB by name, no password, no prompt.
	// BatchMode makes ssh fail instead of asking anything.
	got := strings.TrimSpace(c.sh(ctx, "node1",
		fmt.Sprintf("runuser -u user -- ssh -o BatchMode=yes %s ssh -o BatchMode=yes %s hostname", a, b)))
	if got != b {
		t.Errorf("ssh %s ssh %s hostname = %q", a, b, got)
	}

	// MPI: compile on node1, run with -np 6 and no hostfile argument.
	c.sh(ctx, "node1", "cat > /home/user/allreduce.c <<'EOF'\n"+mpiProgram+"EOF\nchown user: /home/user/allreduce.c")
	c.sh(ctx, "node1", "cd /home/user && runuser -u user -- mpicc -o allreduce allreduce.c")
	mpi := c.sh(ctx, "node1", "cd /home/user && runuser -u user -- mpirun -np 6 ./allreduce")
	t.Logf("mpirun:\n%s", mpi)
	ranks := regexp.MustCompile(`rank (\d+) of 6 on (\S+) sum (\d+)`).FindAllStringSubmatch(mpi, -1)
	if len(ranks) != 6 {
		t.Fatalf("want 6 ranks, got %d:\n%s", len(ranks), mpi)
	}
	hostsSeen := map[string]bool{}
	for _, r := range ranks {
		hostsSeen[r[2]] = true
		if r[3] != "15" { // 0+1+...+5
			t.Errorf("rank %s: Allreduce sum %s, want 15", r[1], r[3])
		}
	}
	if len(hostsSeen) != 3 {
		t.Errorf("ranks ran on %d hosts (%v), want 3", len(hostsSeen), hostsSeen)
	}

	// exec: a command on many nodes, over the cluster's SSH trust.
	hl := "node[" + strings.TrimPrefix(a, "node") + "," + strings.TrimPrefix(b, "node") + "]"
	ex := c.sh(ctx, "node1", "clusterdebian exec -w '"+hl+"' -- hostname")
	for _, n := range []string{a, b} {
		if !strings.Contains(ex, n+": "+n+"\n") {
			t.Errorf("exec -w %s -- hostname lacks %q:\n%s", hl, n+": "+n, ex)
		}
	}
	out, code := c.try(ctx, "node1", "clusterdebian exec -- sh -c 'test $(hostname) != "+a+"'")
	if code == 0 || !strings.Contains(out, a) {
		t.Errorf("exec with a command failing on %s: exit %d, want non-zero and %s named:\n%s", a, code, a, out)
	}

	// Security: a registration without the cluster token is refused.
	reg := `{"mac":"52:54:00:de:ad:01","ip":"10.99.0.250","cores":1,"mem_total_kib":1024}`
	resp := c.sh(ctx, a, fmt.Sprintf(`exec 3<>/dev/tcp/10.99.0.1/80
printf 'POST /api/v1/nodes/register HTTP/1.0\r\nHost: 10.99.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%%s' '%s' >&3
head -n 1 <&3`, len(reg), reg))
	if !strings.Contains(resp, "401") {
		t.Errorf("unauthenticated registration: %q, want 401", resp)
	}
	for _, n := range c.nodes(ctx) {
		if n.IP == "10.99.0.250" {
			t.Error("the unauthenticated registration was recorded")
		}
	}

	// Failure: a node powered off hard is down within three heartbeat
	// intervals (the guard allows more; its time is logged) and leaves the
	// MPI hostfile.
	stopped := time.Now()
	if err := vc.Stop(b); err != nil {
		t.Fatal(err)
	}
	c.waitNodes(ctx, b+" down", func(ns []registry.Node) bool {
		for _, n := range ns {
			if n.Name == b {
				return n.State == "down"
			}
		}
		return false
	})
	t.Logf("%s marked down %.0f s after power-off", b, time.Since(stopped).Seconds())
	if mh := c.sh(ctx, "node1", "cat /etc/cluster/mpi.hosts"); strings.Contains(mh, b+" ") {
		t.Errorf("mpi.hosts still lists %s after it went down:\n%s", b, mh)
	}
	// exec reports the down node within its timeout instead of waiting.
	out, code = c.try(ctx, "node1", "clusterdebian exec --timeout 20s -w "+b+" -- true")
	if code == 0 || !strings.Contains(out, b) || !strings.Contains(out, "down") {
		t.Errorf("exec on the stopped %s: exit %d, want non-zero and %s reported down:\n%s", b, code, b, out)
	}
	// prune drops it from the registry and the cluster files.
	c.sh(ctx, "node1", "clusterdebian prune")
	for _, n := range c.nodes(ctx) {
		if n.Name == b {
			t.Errorf("%s is still in the registry after prune", b)
		}
	}
	if hosts := c.sh(ctx, "node1", "cat /etc/hosts /etc/cluster/mpi.hosts"); regexp.MustCompile(`\b` + b + `\b`).MatchString(hosts) {
		t.Errorf("%s is still in the cluster files after prune:\n%s", b, hosts)
	}

	// Head restart: the registry survives with the same names.
	before := c.nodes(ctx)
	c.sh(ctx, "node1", "systemctl restart clusterdebian-head")
	after := c.waitNodes(ctx, "the head back", func(ns []registry.Node) bool { return len(ns) == len(before) })
	for i := range before {
		if before[i].Name != after[i].Name || before[i].MAC != after[i].MAC {
			t.Errorf("after a head restart: %s/%s became %s/%s", before[i].Name, before[i].MAC, after[i].Name, after[i].MAC)
		}
	}

	// shutdown plans every other node first, node1 last, then does it: it
	// runs detached, as node1 powers itself off under it, and reports on
	// node1's serial console. Every VM ends stopped.
	plan := c.sh(ctx, "node1", "clusterdebian shutdown --dry-run")
	if !strings.Contains(plan, a) || !strings.Contains(plan, "then power off node1") {
		t.Errorf("shutdown --dry-run does not plan %s first and node1 last:\n%s", a, plan)
	}
	c.sh(ctx, "node1", "systemd-run --unit=e2e-shutdown --no-block sh -c 'clusterdebian shutdown > /dev/ttyS0 2>&1'")
	waitAllStopped(ctx, t, vc, 10*time.Minute)
	if serial := vc.Machines()[0].Serial(); !strings.Contains(serial, "1 node(s) confirmed") || !strings.Contains(serial, "power off this machine (node1)") {
		t.Errorf("node1's console does not show %s confirmed before node1 went:\n%s", a, tail(serial, 40))
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestVMBadInput: a missing ISO or too little memory gets a clear error, and
// nothing is created.
func TestVMBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	missing := filepath.Join(t.TempDir(), "nope.iso")
	r := run(t, ctx, "vm", "up", "--name", "e2ebad", "--iso", missing, "--nodes", "1")
	if r.code == 0 || !strings.Contains(r.out, missing) {
		t.Errorf("vm up with a missing ISO: exit %d, want an error naming %s:\n%s", r.code, missing, r.out)
	}
	iso := filepath.Join(t.TempDir(), "x.iso")
	os.WriteFile(iso, []byte("not really"), 0o644)
	r = run(t, ctx, "vm", "up", "--name", "e2ebad", "--iso", iso, "--nodes", "1", "--memory", "64")
	if r.code == 0 || !strings.Contains(r.out, "memory") {
		t.Errorf("vm up with 64 MiB: exit %d, want an error about --memory:\n%s", r.code, r.out)
	}
	if _, err := vm.LoadCluster("e2ebad"); err == nil {
		t.Error("a failed vm up left a cluster behind")
	}
}
