//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// vcluster is a virtual cluster a test booted, with its helpers.
type vcluster struct {
	*vm.Cluster
}

// upCluster boots a virtual cluster from iso for the test t: node1 and
// nodes more, attached (its VMs die with the test binary, also on a
// timeout). It is taken down when t ends, after the serial consoles'
// tails are logged if t failed. A cluster of the same name that an earlier
// run left is removed first. Its progress goes to t's log: t outlives the
// step that calls this, and vm.Up's watchers may still write as it returns.
func upCluster(t *testing.T, ctx context.Context, o vm.UpOptions) (vcluster, error) {
	// A cluster of that name left by a run that died goes first; so does
	// one whose state this checkout cannot read (damaged, or written by
	// another version): vm.Down removes it by its name.
	if old, err := vm.LoadCluster(o.Name); err == nil {
		old.Down()
	} else if !errors.Is(err, vm.ErrNoCluster) {
		t.Logf("removing the leftover cluster %s, whose state cannot be read: %v", o.Name, err)
		if err := vm.Down(o.Name); err != nil {
			return vcluster{}, fmt.Errorf("removing the leftover cluster %s: %w", o.Name, err)
		}
	}
	o.Accel, o.Attached, o.Progress = "tcg", true, testsupport.LogWriter(t)
	c, err := vm.Up(ctx, o)
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				for _, m := range c.Machines() {
					t.Logf("%s serial console tail:\n%s", m.Name, tail(m.Serial(), 60))
				}
			}
			if err := c.Down(); err != nil {
				t.Errorf("vm down: %v", err)
			}
		})
	}
	return vcluster{c}, err
}

// on is the guest node (a registry name or a VM name) of the cluster.
//
// A guest agent that does not answer yet (vm.ErrNoAgent: the command did not
// run) is asked again for up to agentGrace: a node counts as joined at its
// login prompt, and on a loaded host its qemu-guest-agent may start later.
func (c vcluster) on(node string) testsupport.Guest {
	return testsupport.Guest{Name: node, Timeout: 5 * time.Minute,
		Exec: func(ctx context.Context, argv ...string) (string, string, int, error) {
			deadline := time.Now().Add(agentGrace)
			for {
				stdout, stderr, code, err := c.Exec(ctx, node, argv...)
				if !errors.Is(err, vm.ErrNoAgent) || time.Now().After(deadline) {
					return stdout, stderr, code, err
				}
				select {
				case <-ctx.Done():
					return stdout, stderr, code, err
				case <-time.After(3 * time.Second):
				}
			}
		}}
}

// agentGrace is how long vcluster.on waits for a guest agent to answer.
const agentGrace = 2 * time.Minute

// tryNodes returns the head's registry as `clusterdebian status --json`
// shows it on node1, or why it cannot.
func (c vcluster) tryNodes(ctx context.Context) ([]registry.Node, error) {
	return statusJSON(ctx, c.on("node1"))
}

// nodes is tryNodes that fails t when status fails: no check may pass on
// an empty list because the head did not answer.
func (c vcluster) nodes(t *testing.T, ctx context.Context) []registry.Node {
	t.Helper()
	nodes, err := c.tryNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

// waitNodes polls the registry until cond holds; the limit only guards
// against a hang.
func (c vcluster) waitNodes(t *testing.T, ctx context.Context, what string, cond func([]registry.Node) bool) []registry.Node {
	t.Helper()
	return waitRegistry(t, ctx, c.on("node1"), what, cond)
}

// statusJSON runs `clusterdebian status --json` on g and decodes it. A
// failed command or an answer that is not a node list is an error.
func statusJSON(ctx context.Context, g testsupport.Guest) ([]registry.Node, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	stdout, stderr, code, err := g.Exec(cctx, "/bin/bash", "-c", "clusterdebian status --json")
	if err != nil {
		return nil, fmt.Errorf("%s: clusterdebian status --json: %w", g.Name, err)
	}
	if code != 0 {
		return nil, fmt.Errorf("%s: clusterdebian status --json exited %d: %s%s", g.Name, code, stdout, stderr)
	}
	nodes, err := registry.DecodeNodes([]byte(stdout))
	if err != nil {
		return nil, fmt.Errorf("%s: clusterdebian status --json: %w: %s", g.Name, err, stdout)
	}
	return nodes, nil
}

// waitRegistry polls `status --json` on g until cond holds, and fails t
// with the last answer (or error) if it never does.
func waitRegistry(t *testing.T, ctx context.Context, g testsupport.Guest, what string, cond func([]registry.Node) bool) []registry.Node {
	t.Helper()
	var nodes []registry.Node
	var last error
	testsupport.WaitFor(t, ctx, what, 3*time.Second, 15*time.Minute, func() bool {
		nodes, last = statusJSON(ctx, g)
		return last == nil && cond(nodes)
	}, func() string {
		if last != nil {
			return last.Error()
		}
		return fmt.Sprintf("registry %+v", nodes)
	})
	return nodes
}

func upNodes(nodes []registry.Node) []registry.Node {
	var up []registry.Node
	for _, n := range nodes {
		if n.State == registry.StateUp {
			up = append(up, n)
		}
	}
	return up
}

// byName returns the node called name, or false.
func byName(nodes []registry.Node, name string) (registry.Node, bool) {
	for _, n := range nodes {
		if n.Name == name {
			return n, true
		}
	}
	return registry.Node{}, false
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

// compileMPI writes mpiProgram to /home/user/allreduce.c on g and compiles
// it there as the user.
func compileMPI(t *testing.T, ctx context.Context, g testsupport.Guest) {
	t.Helper()
	g.Sh(t, ctx, "cat > /home/user/allreduce.c <<'EOF'\n"+mpiProgram+"EOF\nchown user: /home/user/allreduce.c")
	g.Sh(t, ctx, "cd /home/user && runuser -u user -- mpicc -o allreduce allreduce.c")
}

// TestVirtualCluster boots node1 from the default ISO and two nodes from the
// network, once, and runs its checks as steps on that one cluster: names,
// boot stages, cluster files, the NFS export, shared root, SSH trust, MPI
// across nodes, exec, the registration token, then the steps that change
// the cluster: a node failing, a head restart, prune, and finally a real
// shutdown of the whole cluster.
//
// node1 has an uplink too (`vm up --uplink`): a second NIC on a network
// with its own DHCP server and router. The head must pick the cluster's
// card on its own, serve the private switch, and forward the nodes out of
// the uplink with NAT; MPI must not stray onto the uplink or a docker0.
//
// New checks that leave the cluster as they found it go before "node down".
func TestVirtualCluster(t *testing.T) {
	needE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	s := testsupport.NewScenario(t)
	boot := []string{"boot"}

	var (
		c     vcluster
		nodes []registry.Node
		a, b  string // the two nodes besides node1, in name order
	)
	s.Step("boot", nil, func(st *testing.T) {
		out, _ := defaultImage(st)
		var err error
		c, err = upCluster(t, ctx, vm.UpOptions{Name: "e2e", ISO: filepath.Join(out, imagebuild.ISOName),
			Nodes: 2, MemoryMiB: 2048, NodeMemoryMiB: 1536, CPUs: 2, Uplink: true})
		if err != nil {
			st.Fatalf("vm up: %v", err)
		}
		// All three register.
		nodes = c.waitNodes(st, ctx, "three nodes up", func(ns []registry.Node) bool { return len(upNodes(ns)) == 3 })
		var names []string
		for _, n := range nodes {
			names = append(names, n.Name)
		}
		slices.Sort(names)
		if !slices.Contains(names, "node1") {
			st.Fatalf("the head is not node1: %v", names)
		}
		others := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "node1" })
		a, b = others[0], others[1]
		st.Logf("cluster: %v", names)
	})

	s.Step("names", boot, func(t *testing.T) {
		// Named after the last octet of their address; each knows its
		// name, and the registry its cores and memory.
		for _, n := range nodes {
			last := n.IP[strings.LastIndex(n.IP, ".")+1:]
			if n.Name != "node"+last {
				t.Errorf("node %s has address %s: want name node%s", n.Name, n.IP, last)
			}
			g := c.on(n.Name)
			if got := strings.TrimSpace(g.Sh(t, ctx, "hostname")); got != n.Name {
				t.Errorf("%s calls itself %q", n.Name, got)
			}
			if cores := strings.TrimSpace(g.Sh(t, ctx, "nproc")); cores != strconv.Itoa(n.Cores) {
				t.Errorf("%s: registry says %d cores, nproc says %s", n.Name, n.Cores, cores)
			}
			if mem := strings.TrimSpace(g.Sh(t, ctx, "awk '/^MemTotal:/ {print $2}' /proc/meminfo")); mem != strconv.FormatUint(n.MemTotalKiB, 10) {
				t.Errorf("%s: registry says %d KiB of memory, /proc/meminfo says %s", n.Name, n.MemTotalKiB, mem)
			}
		}
	})

	s.Step("sysrq", boot, func(t *testing.T) {
		// A node answers SysRq on its serial console (contract.ParamSysRq):
		// what a hung node is asked with (vm sysrq). h, the help, is
		// harmless and does not depend on what the node runs.
		m, err := c.Machine(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(m.SerialPath)
		if err := m.SysRq(ctx, "h"); err != nil {
			t.Fatal(err)
		}
		answer := func() string {
			now, _ := os.ReadFile(m.SerialPath)
			if len(now) < len(before) {
				return ""
			}
			return string(now[len(before):])
		}
		testsupport.WaitFor(t, ctx, a+"'s SysRq help on its serial console", time.Second, 2*time.Minute, func() bool {
			return strings.Contains(answer(), "sysrq: HELP")
		}, func() string { return tail(answer(), 10) })
		if strings.Contains(answer(), "This sysrq operation is disabled") {
			t.Errorf("%s has SysRq off: %s", a, tail(answer(), 10))
		}
	})

	s.Step("boot stages", boot, func(t *testing.T) {
		// The head saw every node through its boot, up to registration.
		raw := c.on("node1").Sh(t, ctx, `exec 3<>/dev/tcp/127.0.0.1/80
printf 'GET /api/v1/boot HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
cat <&3`)
		var stages []bootstage.Node
		if _, body, ok := strings.Cut(raw, "\r\n\r\n"); !ok || json.Unmarshal([]byte(body), &stages) != nil {
			t.Fatalf("/api/v1/boot: cannot read %q", raw)
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
				t.Errorf("boot stages do not show %s (%s) registered:\n%s", n.Name, n.IP, raw)
			}
		}
	})

	s.Step("cluster files", boot, func(t *testing.T) {
		// /etc/hosts and the MPI hostfile list all three, slots = cores.
		hosts := c.on("node1").Sh(t, ctx, "cat /etc/hosts")
		mpiHosts := c.on("node1").Sh(t, ctx, "cat /etc/cluster/mpi.hosts")
		for _, n := range nodes {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n.IP) + `\s+` + n.Name + `\b`).MatchString(hosts) {
				t.Errorf("/etc/hosts lacks %s %s:\n%s", n.IP, n.Name, hosts)
			}
			if !regexp.MustCompile(`(?m)^` + n.Name + ` slots=` + strconv.Itoa(n.Cores) + `$`).MatchString(mpiHosts) {
				t.Errorf("mpi.hosts lacks %q:\n%s", fmt.Sprintf("%s slots=%d", n.Name, n.Cores), mpiHosts)
			}
		}
	})

	s.Step("root exported to the booted nodes only", boot, func(t *testing.T) {
		// The live export table holds node1's root, to each booted
		// node's address and nobody else, and a machine on the cluster's
		// wire that did not boot from node1 cannot mount it, whatever
		// its address.
		var booted []string
		for _, n := range nodes {
			if n.Role != registry.RoleHead {
				booted = append(booted, n.IP)
			}
		}
		checkExports(t, c.on("node1").Sh(t, ctx, "exportfs -s"), "/", booted...)
		mountFromOutsideAt(t, ctx, c.on("node1"), c.on(b), clusterHead, "/", []string{"3", "4"},
			bystander{addr: netip.MustParsePrefix(outsiderAddr + "/24")}, bystander{addr: netip.MustParsePrefix(insiderAddr + "/24")})
	})

	s.Step("shared root", boot, func(t *testing.T) {
		// A file written on one node is seen on the other two.
		stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
		c.on(a).Sh(t, ctx, "echo "+stamp+" > /home/user/shared-"+stamp)
		for _, n := range []string{"node1", b} {
			if got := strings.TrimSpace(c.on(n).Sh(t, ctx, "cat /home/user/shared-"+stamp)); got != stamp {
				t.Errorf("%s sees %q in the file %s wrote", n, got, a)
			}
		}
	})

	s.Step("package installed on node1 runs on a node", boot, func(t *testing.T) {
		c.on("node1").Sh(t, ctx, `set -e; d=$(mktemp -d); mkdir -p $d/pkg/DEBIAN $d/pkg/usr/local/bin
printf 'Package: cdtest-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.org>\nDescription: e2e test package\n' > $d/pkg/DEBIAN/control
printf '#!/bin/sh\necho hello from $(hostname)\n' > $d/pkg/usr/local/bin/cdtest-hello
chmod 755 $d/pkg/usr/local/bin/cdtest-hello
dpkg-deb --build $d/pkg $d/cdtest-hello.deb
DEBIAN_FRONTEND=noninteractive apt-get install -y $d/cdtest-hello.deb`)
		if got := strings.TrimSpace(c.on(b).Sh(t, ctx, "cdtest-hello")); got != "hello from "+b {
			t.Errorf("the package installed on node1 says %q on %s", got, b)
		}
	})

	s.Step("up only once sshd answers", boot, func(t *testing.T) {
		checkUpAfterSSHD(t, ctx, c, a, b)
	})

	s.Step("ssh", boot, func(t *testing.T) {
		// As the default user, nodeA -> nodeB by name, no password, no
		// prompt: BatchMode makes ssh fail instead of asking anything.
		got := strings.TrimSpace(c.on("node1").Sh(t, ctx,
			fmt.Sprintf("runuser -u user -- ssh -o BatchMode=yes %s ssh -o BatchMode=yes %s hostname", a, b)))
		if got != b {
			t.Errorf("ssh %s ssh %s hostname = %q", a, b, got)
		}
	})

	s.Step("mpi", boot, func(t *testing.T) {
		// Compile on node1, run with -np 6 and no hostfile argument, with
		// node1's uplink up.
		compileMPI(t, ctx, c.on("node1"))
		runMPI(t, ctx, c.on("node1"), 6, 3)
	})

	s.Step("mpi beside docker0", []string{"mpi"}, func(t *testing.T) {
		// A docker0 bridge with an address, up, on node1 and a node, as
		// Docker leaves it, and libvirt's virbr0 on node1: MPI keeps to
		// the cluster network all the same.
		for _, br := range []struct{ node, name, addr string }{
			{"node1", "docker0", "172.17.0.1/16"}, {a, "docker0", "172.17.0.1/16"}, {"node1", "virbr0", "192.168.122.1/24"},
		} {
			g := c.on(br.node)
			g.Sh(t, ctx, fmt.Sprintf("ip link add %[1]s type bridge && ip addr add %[2]s dev %[1]s && ip link set %[1]s up", br.name, br.addr))
			t.Cleanup(func() { g.Try(t, context.Background(), "ip link del "+br.name) })
		}
		runMPI(t, ctx, c.on("node1"), 6, 3)
	})

	s.Step("uplink: node1 picks the cluster card and forwards", boot, func(t *testing.T) {
		// Two connected cards; the head took the one with no other DHCP
		// server and no default route, which is the cluster's (its MAC),
		// serves it, and loaded its NAT table.
		g := c.on("node1")
		n := headNetwork(t, ctx, g)
		if mac := strings.TrimSpace(g.Sh(t, ctx, "cat /sys/class/net/"+n.Interface+"/address")); mac != c.VMs[0].MAC {
			t.Errorf("the head took %s (%s), not the cluster's card %s", n.Interface, mac, c.VMs[0].MAC)
		}
		if !strings.Contains(n.InterfaceWhy, "no other DHCP server and no default route") || n.Mode != "server" || n.Address != clusterHead || n.NAT == nil {
			t.Errorf("GET /api/v1/network: %+v", n)
		}
		nft := g.Sh(t, ctx, "nft list table ip clusterdebian")
		if !strings.Contains(nft, "masquerade") || !strings.Contains(nft, clusterSubnet) {
			t.Errorf("nft list table ip clusterdebian:\n%s", nft)
		}
	})

	s.Step("uplink: nodes reach the outside through node1", boot, func(t *testing.T) {
		// The node's DHCP gave node1 as router and node1's upstream DNS
		// server (the uplink's); the outside sees node1's uplink address.
		conf := c.on(a).Sh(t, ctx, "cat /run/net-*.conf")
		for _, want := range []string{"IPV4GATEWAY='" + clusterHead + "'", "IPV4DNS0='" + c.Uplink.Router + "'"} {
			if !strings.Contains(conf, want) {
				t.Errorf("%s's DHCP configuration lacks %s:\n%s", a, want, conf)
			}
		}
		up, ok := roomLease(t, c.Uplink, c.VMs[0].UplinkMAC)
		if !ok {
			t.Fatalf("node1's second NIC (%s) has no lease on the uplink", c.VMs[0].UplinkMAC)
		}
		if got := whoami(t, ctx, c.on(a)); got != up.IP.String() {
			t.Errorf("the outside sees %s as %q, want node1's uplink address %s (NAT)", a, got, up.IP)
		}
	})

	s.Step("exec", boot, func(t *testing.T) {
		// A command on many nodes, over the cluster's SSH trust.
		hl := "node[" + strings.TrimPrefix(a, "node") + "," + strings.TrimPrefix(b, "node") + "]"
		ex := c.on("node1").Sh(t, ctx, "clusterdebian exec -w '"+hl+"' -- hostname")
		for _, n := range []string{a, b} {
			if !strings.Contains(ex, n+": "+n+"\n") {
				t.Errorf("exec -w %s -- hostname lacks %q:\n%s", hl, n+": "+n, ex)
			}
		}
		out, code := c.on("node1").Try(t, ctx, "clusterdebian exec -- sh -c 'test $(hostname) != "+a+"'")
		if code == 0 || !strings.Contains(out, a) {
			t.Errorf("exec with a command failing on %s: exit %d, want non-zero and %s named:\n%s", a, code, a, out)
		}
	})

	s.Step("registration needs the token", boot, func(t *testing.T) {
		reg := `{"mac":"52:54:00:de:ad:01","ip":"10.99.0.250","cores":1,"mem_total_kib":1024}`
		resp := c.on(a).Sh(t, ctx, fmt.Sprintf(`exec 3<>/dev/tcp/10.99.0.1/80
printf 'POST /api/v1/nodes/register HTTP/1.0\r\nHost: 10.99.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%%s' '%s' >&3
head -n 1 <&3`, len(reg), reg))
		if !strings.Contains(resp, "401") {
			t.Errorf("unauthenticated registration: %q, want 401", resp)
		}
		for _, n := range c.nodes(t, ctx) {
			if n.IP == "10.99.0.250" {
				t.Error("the unauthenticated registration was recorded")
			}
		}
		// Any user on a node can read the token in /proc/cmdline; with it
		// alone, a user on one node cannot make another node leave (out
		// of the hostfiles, its Slurm jobs ended): only root on that node.
		nb, ok := byName(c.nodes(t, ctx), b)
		if !ok {
			t.Fatalf("%s is not registered", b)
		}
		leave := fmt.Sprintf(`{"mac":%q}`, nb.MAC)
		resp = c.on(a).Sh(t, ctx, fmt.Sprintf(`runuser -u user -- bash -c 'tok=$(tr " " "\n" < /proc/cmdline | sed -n "s/^clusterdebian.token=//p")
exec 3<>/dev/tcp/10.99.0.1/80
printf "POST /api/v1/nodes/leave HTTP/1.0\r\nHost: 10.99.0.1\r\nAuthorization: Bearer %%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%%s" "$tok" '"'"'%s'"'"' >&3
head -n 1 <&3'`, len(leave), leave))
		if !strings.Contains(resp, "403") {
			t.Errorf("a user on %s sent leave for %s with the token: %q, want 403", a, b, resp)
		}
		if n, ok := byName(c.nodes(t, ctx), b); !ok || n.State != registry.StateUp {
			t.Errorf("after a user's leave for %s from %s: %+v (registered %v), want it up", b, a, n, ok)
		}
	})

	s.Step("verify", boot, func(t *testing.T) { checkVerify(t, ctx, c, nodes, b) })

	s.Step("slurm", boot, func(t *testing.T) { checkSlurm(t, ctx, c, nodes) })

	// From here on, steps change the cluster.

	s.Step("node down", boot, func(t *testing.T) {
		// A node powered off hard is marked down (the time it took is
		// logged) and leaves the MPI hostfile; exec reports it within its
		// timeout instead of waiting.
		stopped := time.Now()
		if err := c.Stop(b); err != nil {
			t.Fatal(err)
		}
		c.waitNodes(t, ctx, b+" down", func(ns []registry.Node) bool {
			n, ok := byName(ns, b)
			return ok && n.State == registry.StateDown
		})
		t.Logf("%s marked down %.0f s after power-off", b, time.Since(stopped).Seconds())
		c.waitSlurmDown(t, ctx, b)
		t.Logf("%s down in Slurm %.0f s after power-off", b, time.Since(stopped).Seconds())
		if mh := c.on("node1").Sh(t, ctx, "cat /etc/cluster/mpi.hosts"); strings.Contains(mh, b+" ") {
			t.Errorf("mpi.hosts still lists %s after it went down:\n%s", b, mh)
		}
		out, code := c.on("node1").Try(t, ctx, "clusterdebian exec --timeout 20s -w "+b+" -- true")
		if code == 0 || !strings.Contains(out, b) || !strings.Contains(out, "down") {
			t.Errorf("exec on the stopped %s: exit %d, want non-zero and %s reported down:\n%s", b, code, b, out)
		}
	})

	s.Step("head restart keeps the registry", []string{"node down"}, func(t *testing.T) {
		// Restarted while the stopped node is still listed: a head that
		// lost its registry would have every running agent register again
		// (same names: they come from the addresses), but with new
		// registration times, and could not list the stopped node at all.
		before := c.nodes(t, ctx)
		pid := func() string {
			return strings.TrimSpace(c.on("node1").Sh(t, ctx, "systemctl show -P MainPID clusterdebian-head"))
		}
		oldPID := pid()
		c.on("node1").Sh(t, ctx, "systemctl restart clusterdebian-head")
		if newPID := pid(); newPID == oldPID || newPID == "0" {
			t.Fatalf("the head's pid went from %s to %s: no restart", oldPID, newPID)
		}
		after := c.waitNodes(t, ctx, "the head back with every node", func(ns []registry.Node) bool { return len(ns) >= len(before) })
		if len(after) != len(before) {
			t.Errorf("%d nodes before the restart, %d after:\nbefore %+v\nafter %+v", len(before), len(after), before, after)
		}
		for _, old := range before {
			n, ok := byName(after, old.Name)
			switch {
			case !ok:
				t.Errorf("%s (%s) is gone after the head restart", old.Name, old.State)
			case n.MAC != old.MAC || n.IP != old.IP:
				t.Errorf("after the head restart %s/%s/%s became %s/%s", old.Name, old.MAC, old.IP, n.MAC, n.IP)
			case !n.Registered.Equal(old.Registered):
				t.Errorf("%s registered at %s before the head restart and at %s after: the registry was lost", old.Name, old.Registered, n.Registered)
			}
		}
		if n, ok := byName(after, b); ok && n.State != registry.StateDown {
			t.Errorf("the stopped %s is %s after the head restart, want %s", b, n.State, registry.StateDown)
		}
		// The running node is still exported to, and still reaches out.
		if n, ok := byName(after, a); ok {
			exports, err := parseExports(c.on("node1").Sh(t, ctx, "exportfs -s"))
			if err != nil || !slices.ContainsFunc(exports, func(e export) bool { return e.client == n.IP }) {
				t.Errorf("after the head restart %s (%s) is not exported to: %+v %v", a, n.IP, exports, err)
			}
		}
		if up, ok := roomLease(t, c.Uplink, c.VMs[0].UplinkMAC); !ok || whoami(t, ctx, c.on(a)) != up.IP.String() {
			t.Errorf("after the head restart %s does not reach the outside through node1's %+v", a, up)
		}
	})

	s.Step("prune", []string{"node down"}, func(t *testing.T) {
		// prune drops the down node from the registry and the cluster files.
		c.on("node1").Sh(t, ctx, "clusterdebian prune")
		if _, ok := byName(c.nodes(t, ctx), b); ok {
			t.Errorf("%s is still in the registry after prune", b)
		}
		if hosts := c.on("node1").Sh(t, ctx, "cat /etc/hosts /etc/cluster/mpi.hosts"); regexp.MustCompile(`\b` + b + `\b`).MatchString(hosts) {
			t.Errorf("%s is still in the cluster files after prune:\n%s", b, hosts)
		}
		// Its export went with it; the running node's stays.
		checkExports(t, c.on("node1").Sh(t, ctx, "exportfs -s"), "/", nodeIP(t, nodes, a))
		c.checkSlurmGone(t, ctx, b)
	})

	s.Step("shutdown", boot, func(t *testing.T) {
		// shutdown plans every running node first, node1 last, then does
		// it: it runs detached, as node1 powers itself off under it, and
		// reports on node1's serial console. Every VM ends stopped.
		plan := c.on("node1").Sh(t, ctx, "clusterdebian shutdown --dry-run")
		if !strings.Contains(plan, a) || !strings.Contains(plan, "then power off node1") {
			t.Errorf("shutdown --dry-run does not plan %s first and node1 last:\n%s", a, plan)
		}
		checkSlurmShutdownPlan(t, plan, a)
		confirmed := len(upNodes(c.nodes(t, ctx))) - 1
		c.on("node1").Sh(t, ctx, "systemd-run --unit=e2e-shutdown --no-block sh -c 'clusterdebian shutdown > /dev/ttyS0 2>&1'")
		waitAllStopped(ctx, t, c.Cluster, 10*time.Minute)
		if serial := c.Machines()[0].Serial(); !strings.Contains(serial, fmt.Sprintf("%d node(s) confirmed", confirmed)) ||
			!strings.Contains(serial, "power off this machine (node1)") {
			t.Errorf("node1's console does not show %d node(s) confirmed before node1 went:\n%s", confirmed, tail(serial, 40))
		}
		checkSlurmShutdownDone(t, c.Machines()[0].Serial(), a)
	})
}

// waitAllStopped waits until `vm list` shows every VM of vc stopped.
func waitAllStopped(ctx context.Context, t *testing.T, vc *vm.Cluster, limit time.Duration) {
	t.Helper()
	var running []string
	testsupport.WaitFor(t, ctx, "every VM to stop", 3*time.Second, limit, func() bool {
		running = nil
		for _, v := range vc.List(ctx) {
			if v.Running {
				running = append(running, v.VM)
			}
		}
		return len(running) == 0
	}, func() string { return fmt.Sprintf("still running: %v", running) })
}

// TestVMBadInput: a missing ISO or too little memory gets a clear error, and
// nothing is created.
func TestVMBadInput(t *testing.T) {
	needE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	missing := filepath.Join(t.TempDir(), "nope.iso")
	r := run(t, ctx, "vm", "up", "--name", "e2ebad", "--iso", missing, "--nodes", "1")
	if r.code == 0 || !strings.Contains(r.out, missing) {
		t.Errorf("vm up with a missing ISO: exit %d, want an error naming %s:\n%s", r.code, missing, r.out)
	}
	iso := filepath.Join(t.TempDir(), "x.iso")
	if err := os.WriteFile(iso, []byte("not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, ctx, "vm", "up", "--name", "e2ebad", "--iso", iso, "--nodes", "1", "--memory", "64")
	if r.code == 0 || !strings.Contains(r.out, "memory") {
		t.Errorf("vm up with 64 MiB: exit %d, want an error about --memory:\n%s", r.code, r.out)
	}
	if _, err := vm.LoadCluster("e2ebad"); !errors.Is(err, vm.ErrNoCluster) {
		t.Errorf("a failed vm up left a cluster behind (LoadCluster: %v)", err)
	}
}

// runMPI runs the allreduce program (compileMPI) on g with np ranks, no
// hostfile and no MCA flags, and checks that every rank reports the sum
// and that they ran on hosts hosts.
func runMPI(t *testing.T, ctx context.Context, g testsupport.Guest, np, hosts int) {
	t.Helper()
	mpi := g.Sh(t, ctx, fmt.Sprintf("cd /home/user && runuser -u user -- timeout 300 mpirun -np %d ./allreduce", np))
	t.Logf("mpirun:\n%s", mpi)
	ranks := regexp.MustCompile(fmt.Sprintf(`rank (\d+) of %d on (\S+) sum (\d+)`, np)).FindAllStringSubmatch(mpi, -1)
	if len(ranks) != np {
		t.Fatalf("want %d ranks, got %d:\n%s", np, len(ranks), mpi)
	}
	hostsSeen := map[string]bool{}
	want := fmt.Sprint(np * (np - 1) / 2)
	for _, r := range ranks {
		hostsSeen[r[2]] = true
		if r[3] != want {
			t.Errorf("rank %s: Allreduce sum %s, want %s", r[1], r[3], want)
		}
	}
	if len(hostsSeen) != hosts {
		t.Errorf("ranks ran on %d hosts (%v), want %d", len(hostsSeen), hostsSeen, hosts)
	}
}

// headNetwork reads node1's GET /api/v1/network on g (node1).
func headNetwork(t *testing.T, ctx context.Context, g testsupport.Guest) registry.Network {
	t.Helper()
	raw := g.Sh(t, ctx, `exec 3<>/dev/tcp/127.0.0.1/80
printf 'GET /api/v1/network HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
cat <&3`)
	var n registry.Network
	if _, body, ok := strings.Cut(raw, "\r\n\r\n"); !ok || json.Unmarshal([]byte(body), &n) != nil || n.Summary == "" {
		t.Fatalf("/api/v1/network: cannot read %q", raw)
	}
	return n
}

// whoami asks the outside's web server, by name, who g is, as the
// outside sees it: its answer's address.
func whoami(t *testing.T, ctx context.Context, g testsupport.Guest) string {
	t.Helper()
	out := g.Sh(t, ctx, fmt.Sprintf(`getent hosts %[1]s
exec 3<>/dev/tcp/%[1]s/80
printf 'GET %[2]s HTTP/1.0\r\nHost: %[1]s\r\n\r\n' >&3
timeout 60 cat <&3`, vm.OutsideName, vm.WhoamiPath))
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(vm.OutsideAddr) + `\s+` + regexp.QuoteMeta(vm.OutsideName) + `$`).MatchString(out) {
		t.Errorf("%s does not resolve %s to %s:\n%s", g.Name, vm.OutsideName, vm.OutsideAddr, out)
	}
	m := regexp.MustCompile(`(?m)^you are (\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: the outside's %s did not answer:\n%s", g.Name, vm.WhoamiPath, out)
	}
	return m[1]
}

// roomLease finds mac's lease in the room's lease file.
func roomLease(t *testing.T, r *vm.RoomState, mac string) (vm.RoomLease, bool) {
	t.Helper()
	ls, err := r.Leases()
	if err != nil {
		t.Fatalf("the %s's leases: %v", r.Kind, err)
	}
	for _, l := range ls {
		if l.MAC == mac {
			return l, true
		}
	}
	return vm.RoomLease{}, false
}

func nodeIP(t *testing.T, nodes []registry.Node, name string) string {
	t.Helper()
	n, ok := byName(nodes, name)
	if !ok {
		t.Fatalf("no %s in %+v", name, nodes)
	}
	return n.IP
}

// checkUpAfterSSHD checks on each node that its agent told the head the
// node was up only after sshd listened: in the node's journal, sshd's
// "Server listening" comes before the agent's "sshd answers". A node up
// (in the hostfiles) before that refuses ssh, and so mpirun.
func checkUpAfterSSHD(t *testing.T, ctx context.Context, c vcluster, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		out := c.on(n).Sh(t, ctx, "journalctl -b -u ssh -u clusterdebian-node --no-pager -o cat | grep -E 'Server listening|sshd answers|joined|registered' || true")
		listening := strings.Index(out, "Server listening")
		answered := strings.Index(out, "sshd answers")
		switch {
		case answered < 0:
			t.Errorf("%s: the agent never said that sshd answers:\n%s", n, out)
		case listening < 0 || listening > answered:
			t.Errorf("%s: the agent said sshd answers before sshd listened:\n%s", n, out)
		}
	}
}
