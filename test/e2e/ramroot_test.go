//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// pvmTask is a PVM "task" that says where it runs. PVM looks for tasks in
// ~/pvm3/bin/$PVM_ARCH, which every node sees through the shared /home.
const pvmTask = "#!/bin/sh\necho \"task on $(hostname)\"\n"

// TestRAMRootPVM boots node1 from the bookworm RAM-root image and two nodes
// that fetch the image into their RAM, once, and checks as steps: they
// join, run from RAM with node1's /home over NFS (exported to the subnet
// only), the cluster files reach them through their agents, SSH and MPI
// work across them, and PVM adds every node and spawns a task on a remote
// one. node1 has a screen (VGA) and the image a desktop: the user logs in
// on the console and startx brings up the window manager (checkDesktop).
// Then the whole cluster is shut down with `clusterdebian shutdown`.
func TestRAMRootPVM(t *testing.T) {
	needE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	s := testsupport.NewScenario(t)
	boot := []string{"boot"}

	var (
		c      vcluster
		nodes  []registry.Node
		others []string // the nodes besides node1
		a, b   string
	)
	s.Step("boot", nil, func(st *testing.T) {
		out, _ := ramImg.get(st)
		var err error
		c, err = upCluster(t, ctx, vm.UpOptions{Name: "e2e-ram", ISO: filepath.Join(out, imagebuild.ISOName),
			Nodes: 2, MemoryMiB: 2048, NodeMemoryMiB: 2048, CPUs: 1, Display: true})
		if err != nil {
			st.Fatalf("vm up: %v", err)
		}
		nodes = c.waitNodes(st, ctx, "three nodes up", func(ns []registry.Node) bool { return len(upNodes(ns)) == 3 })
		for _, n := range nodes {
			if n.Name != "node1" {
				others = append(others, n.Name)
			}
		}
		if len(others) != 2 {
			st.Fatalf("want node1 and two nodes, registry has %+v", nodes)
		}
		a, b = others[0], others[1]
	})

	s.Step("nodes run from RAM", boot, func(t *testing.T) {
		// Each node runs from its own RAM copy, with node1's /home over NFS.
		for _, n := range others {
			if got := strings.TrimSpace(c.on(n).Sh(t, ctx, "hostname")); got != n {
				t.Errorf("%s calls itself %q", n, got)
			}
			mounts := c.on(n).Sh(t, ctx, "cat /proc/cmdline; findmnt -n -o FSTYPE,SOURCE /; findmnt -n -o FSTYPE,SOURCE /home")
			if !strings.Contains(mounts, "clusterdebian.root=ram") || regexp.MustCompile(`(?m)^nfs\S* .*:/$`).MatchString(mounts) {
				t.Errorf("%s does not run from RAM:\n%s", n, mounts)
			}
			if !regexp.MustCompile(`(?m)^nfs4? +10\.99\.0\.1:/home$`).MatchString(mounts) {
				t.Errorf("%s: /home is not node1's over NFS:\n%s", n, mounts)
			}
		}
	})

	s.Step("home exported to the booted nodes only", boot, func(t *testing.T) {
		out := c.on("node1").Sh(t, ctx, "exportfs -s")
		var booted []string
		for _, n := range nodes {
			if n.Role != registry.RoleHead {
				booted = append(booted, n.IP)
			}
		}
		checkExports(t, out, "/home", booted...)
		list, _ := parseExports(out)
		for _, e := range list {
			if !strings.Contains(","+e.options+",", ",root_squash,") {
				t.Errorf("exportfs -s: /home to %s without root_squash: %s", e.client, e.options)
			}
		}
	})

	s.Step("cluster files", boot, func(t *testing.T) {
		// The cluster files reached each node through its agent.
		for _, n := range others {
			hosts := c.on(n).Sh(t, ctx, "cat /etc/hosts /etc/cluster/mpi.hosts /etc/cluster/pvm.hosts")
			for _, m := range nodes {
				if !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(m.IP)+`\s+`+m.Name+`\b`).MatchString(hosts) ||
					!regexp.MustCompile(`(?m)^`+m.Name+` slots=`).MatchString(hosts) {
					t.Errorf("%s's cluster files lack %s (%s):\n%s", n, m.Name, m.IP, hosts)
				}
			}
		}
	})

	s.Step("home shared, root squashed", boot, func(t *testing.T) {
		// Written on one node, read on the others, as the user: root on a
		// node is squashed on node1's /home.
		stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
		c.on(a).Sh(t, ctx, "runuser -u user -- sh -c 'echo "+stamp+" > /home/user/ram-"+stamp+"'")
		for _, n := range []string{"node1", b} {
			if got := strings.TrimSpace(c.on(n).Sh(t, ctx, "runuser -u user -- cat /home/user/ram-"+stamp)); got != stamp {
				t.Errorf("%s sees %q in the file %s wrote in /home", n, got, a)
			}
		}
		// Root on a node is not root on node1's /home.
		if out, code := c.on(a).Try(t, ctx, "touch /home/root-was-here"); code == 0 {
			t.Errorf("root on %s could write to node1's /home:\n%s", a, out)
		}
	})

	s.Step("ssh", boot, func(t *testing.T) {
		// By name between the RAM nodes, verified by the cluster CA.
		if got := strings.TrimSpace(c.on(a).Sh(t, ctx, "runuser -u user -- ssh -o BatchMode=yes "+b+" hostname")); got != b {
			t.Errorf("ssh %s hostname from %s = %q", b, a, got)
		}
	})

	s.Step("mpi", boot, func(t *testing.T) {
		// Across the three machines, started on a node.
		compileMPI(t, ctx, c.on("node1"))
		mpi := c.on(a).Sh(t, ctx, "runuser -u user -- sh -c 'cd /home/user && mpirun -np 3 ./allreduce'")
		t.Logf("mpirun on %s:\n%s", a, mpi)
		ranks := regexp.MustCompile(`rank (\d+) of 3 on (\S+) sum 3`).FindAllStringSubmatch(mpi, -1)
		hostsSeen := map[string]bool{}
		for _, r := range ranks {
			hostsSeen[r[2]] = true
		}
		if len(ranks) != 3 || len(hostsSeen) != 3 {
			t.Errorf("want 3 ranks summing to 3 on 3 hosts, got %d ranks on %v:\n%s", len(ranks), hostsSeen, mpi)
		}
	})

	s.Step("pvm", boot, func(t *testing.T) {
		// The hostfile adds every node (conf lists them), and a task
		// spawned on a remote node reports that node's name.
		c.on("node1").Sh(t, ctx, "install -d -o user -g user /home/user/pvm3 /home/user/pvm3/bin /home/user/pvm3/bin/LINUX64 && "+
			"printf '"+strings.ReplaceAll(pvmTask, "\n", `\n`)+"' > /home/user/pvm3/bin/LINUX64/whereami && "+
			"chown user: /home/user/pvm3/bin/LINUX64/whereami && chmod 755 /home/user/pvm3/bin/LINUX64/whereami")
		// The console prints a task's output when it next reads a
		// command, and halt ends it with its buffers unflushed: hence
		// stdbuf, and a conf after the wait.
		pvm := c.on("node1").Sh(t, ctx, `cd /home/user && runuser -u user -- sh -c '
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
	})

	s.Step("slurm", boot, func(t *testing.T) {
		// Bookworm's Slurm 22.05 on RAM roots: every node registers
		// itself, srun runs on all three, and starts an Open MPI 4.1
		// program through PMIx.
		c.waitSlurmIdle(t, ctx, nodes)
		g := c.on("node1")
		checkSrunHostname(t, ctx, g, nodes)
		compileMPI(t, ctx, g)
		checkSrunMPI(t, ctx, g, nodes)
	})

	s.Step("desktop: startx on node1's screen", boot, func(t *testing.T) {
		// The image has image.desktop (desktopConfig) and node1 a VGA
		// display; the nodes run their own copy of the same root.
		m, err := c.Machine(ctx, "node1")
		if err != nil {
			t.Fatal(err)
		}
		checkDesktop(t, ctx, m, c.on("node1"), c.on(a), c.on(b))
	})

	s.Step("lease file lost", boot, func(t *testing.T) {
		// Issue 15: the head restarts with an empty lease file while the
		// RAM-root nodes run on. New machines (fresh MACs, from this
		// machine's side of the cluster's switch) get no running node's
		// address, and every node keeps its address and name.
		before := c.nodes(t, ctx)
		g := c.on("node1")
		// The head comes back whatever happens below: later steps need it.
		defer g.Try(t, ctx, "systemctl start clusterdebian-head")
		g.Sh(t, ctx, "systemctl stop clusterdebian-head && : > /var/lib/clusterdebian/leases.json && systemctl start clusterdebian-head")
		c.waitNodes(t, ctx, "the restarted head to list the nodes", func(ns []registry.Node) bool { return len(ns) == len(before) })
		if log := g.Sh(t, ctx, "journalctl -u clusterdebian-head -b --no-pager -o cat | grep -F 'leases rebuilt from the node registry' || true"); strings.TrimSpace(log) == "" {
			t.Errorf("the restarted head does not say it rebuilt the leases from the registry")
		}
		held := map[string]string{} // address -> node
		for _, n := range before {
			held[n.IP] = n.Name
		}
		for i := range 3 {
			got := probeLease(t, ctx, c.Cluster)
			if name, ok := held[got.String()]; ok {
				t.Errorf("new machine %d got %s, the address of the running %s", i, got, name)
			}
			held[got.String()] = fmt.Sprintf("new machine %d", i)
		}
		after := c.waitNodes(t, ctx, "every node up after the restart", func(ns []registry.Node) bool { return len(upNodes(ns)) == len(before) })
		for _, old := range before {
			n, ok := byName(after, old.Name)
			if !ok || n.MAC != old.MAC || n.IP != old.IP {
				t.Errorf("%s (%s at %s) after the restart: %+v", old.Name, old.MAC, old.IP, n)
			}
		}
	})

	s.Step("shutdown", boot, func(t *testing.T) {
		// Every node powers off, node1 last, and the VMs stop. It runs
		// detached, as node1 powers itself off under it; its report goes
		// to node1's serial console.
		c.on("node1").Sh(t, ctx, "systemd-run --unit=e2e-shutdown --no-block sh -c 'clusterdebian shutdown > /dev/ttyS0 2>&1'")
		waitAllStopped(ctx, t, c.Cluster, 10*time.Minute)
		serial := c.Machines()[0].Serial()
		if !strings.Contains(serial, "2 node(s) confirmed") || !strings.Contains(serial, "power off this machine (node1)") {
			t.Errorf("node1's console does not show both nodes confirmed before node1 went:\n%s", tail(serial, 40))
		}
	})
}

// probeLease puts a new machine (a namespace of this machine, fresh MAC) on
// the cluster's switch, has the head lease it an address, and takes it off
// again.
func probeLease(t *testing.T, ctx context.Context, vc *vm.Cluster) netip.Addr {
	t.Helper()
	probe, mac := newNS(t), randomMAC()
	cluster := &netns.NS{Name: vc.NetNS}
	const port = "vprobe"
	if err := netns.AddVeth(ctx, cluster, port, probe, "eth0"); err != nil {
		t.Fatal(err)
	}
	defer cluster.IP(context.Background(), "link", "del", port)
	if err := cluster.SetMaster(ctx, port, vc.Bridge); err != nil {
		t.Fatal(err)
	}
	if err := probe.IP(ctx, "link", "set", "eth0", "address", mac); err != nil {
		t.Fatal(err)
	}
	hw, _ := net.ParseMAC(mac)
	var lease *nclient4.Lease
	err := probe.Do(func() error {
		cl, err := nclient4.New("eth0", nclient4.WithHWAddr(hw), nclient4.WithTimeout(5*time.Second), nclient4.WithRetry(5))
		if err != nil {
			return err
		}
		defer cl.Close()
		lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		lease, err = cl.Request(lctx)
		return err
	})
	if err != nil {
		t.Fatalf("DHCP from a new machine %s: %v", mac, err)
	}
	ip, _ := netip.AddrFromSlice(lease.ACK.YourIPAddr.To4())
	t.Logf("new machine %s leased %s", mac, ip)
	return ip
}
