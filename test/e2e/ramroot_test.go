//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/swarm"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// pvmTask is a PVM "task" that says where it runs. PVM looks for tasks in
// ~/pvm3/bin/$PVM_ARCH, which every node sees through the shared /home.
const pvmTask = "#!/bin/sh\necho \"task on $(hostname)\"\n"

// TestRAMRootPVM boots node1 from the bookworm RAM-root image and two nodes,
// powered on one after another, that fetch the image into their RAM, once,
// the second from the first (the swarm), and checks as steps: they
// join, run from RAM with node1's /home over NFS (exported to the subnet
// only), the cluster files reach them through their agents, SSH and MPI
// work across them, and PVM adds every node and spawns a task on a remote
// one. node1 has a screen (VGA) and the image a desktop: the user logs in
// on the console and startx brings up the window manager (checkDesktop).
// A third node, left off at first, then boots with the swarm: its layers
// come from the two nodes up, one of which serves a corrupted copy
// (checkSwarm). Then the whole cluster is shut down with `clusterdebian
// shutdown`.
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
			Nodes: 3, Later: 1, OneByOne: true, MemoryMiB: 2048, NodeMemoryMiB: 2048, CPUs: 1, Display: true})
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

	s.Step("up only once sshd answers", boot, func(t *testing.T) {
		checkUpAfterSSHD(t, ctx, c, a, b)
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

	s.Step("swarm: a node boots from peers, a corrupted peer is caught", boot, func(t *testing.T) {
		checkSwarm(t, ctx, c, others)
	})

	s.Step("lease file lost", boot, func(t *testing.T) {
		// Issue 15: the head restarts with an empty lease file while the
		// RAM-root nodes run on. New machines (fresh MACs, from this
		// machine's side of the cluster's switch) get no running node's
		// address, and every node keeps its address and name.
		before := upNodes(c.nodes(t, ctx))
		listed := func(ns []registry.Node) bool {
			for _, old := range before {
				if _, ok := byName(ns, old.Name); !ok {
					return false
				}
			}
			return true
		}
		g := c.on("node1")
		// The head comes back whatever happens below: later steps need it.
		defer g.Try(t, ctx, "systemctl start clusterdebian-head")
		g.Sh(t, ctx, "systemctl stop clusterdebian-head && : > /var/lib/clusterdebian/leases.json && systemctl start clusterdebian-head")
		c.waitNodes(t, ctx, "the restarted head to list the nodes", listed)
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
		after := c.waitNodes(t, ctx, "every node up after the restart", func(ns []registry.Node) bool { return listed(upNodes(ns)) })
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

// laterVM is the node VM TestRAMRootPVM leaves off at first (vm.UpOptions
// Later): the last of vm2..vm4.
const laterVM = "vm4"

// swarmState is node1's GET /api/v1/swarm.
type swarmState struct {
	On bool `json:"on"`
	swarm.Stats
}

// getSwarm reads node1's swarm figures, over bash's /dev/tcp (the image
// need not have curl).
func getSwarm(t *testing.T, ctx context.Context, c vcluster) swarmState {
	t.Helper()
	out := c.on("node1").Sh(t, ctx, `exec 3<>/dev/tcp/127.0.0.1/80; printf 'GET `+contract.SwarmPath+` HTTP/1.0\r\nHost: node1\r\n\r\n' >&3; cat <&3`)
	_, body, ok := strings.Cut(strings.ReplaceAll(out, "\r\n", "\n"), "\n\n")
	var st swarmState
	if !ok {
		t.Fatalf("node1's %s: no HTTP body in %q", contract.SwarmPath, out)
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("node1's %s: %v: %q", contract.SwarmPath, err, body)
	}
	return st
}

// checkSwarm powers on the node left off, after the first two nodes (up,
// holding verified layers) serve them, with the copy of the base layer of
// the peer node1 offers first corrupted in place. The new node must catch
// it by its checksum, get the layer from the other peer, boot, and serve
// its layers in turn; node1 must have sent less than three copies of the
// image, and no longer offer the corrupted peer.
func checkSwarm(t *testing.T, ctx context.Context, c vcluster, others []string) {
	before := getSwarm(t, ctx, c)
	t.Logf("node1's swarm before the third node: %+v", before)
	if !before.On {
		t.Fatal("the swarm is off on node1 (nodes.swarm is on by default)")
	}
	// The nodes were powered on one after another (vm.UpOptions.OneByOne):
	// the second fetched its layers while the first was up.
	if before.FromPeers[contract.BaseLayer] < 1 {
		t.Errorf("the second node, powered on after the first joined, did not get %s from a peer: %+v", contract.BaseLayer, before)
	}
	// The peer node1 offers first: among idle peers, the one that served
	// the fewest bytes, then the lowest address (swarm.Broker.Choose).
	nodes := c.nodes(t, ctx)
	var first swarm.PeerStats
	for _, p := range before.Peers {
		if !slices.Contains(p.Layers, contract.BaseLayer) || p.Bad != "" {
			continue
		}
		if first.Addr == "" || p.Served < first.Served ||
			(p.Served == first.Served && netip.MustParseAddr(p.Addr).Less(netip.MustParseAddr(first.Addr))) {
			first = p
		}
	}
	if len(before.Peers) != len(others) || first.Addr == "" {
		t.Fatalf("want the %d nodes up as peers holding %s, node1 has %+v", len(others), contract.BaseLayer, before.Peers)
	}
	var bad string
	for _, n := range nodes {
		if n.IP == first.Addr {
			bad = n.Name
		}
	}
	// Flip one byte in place, in the peer's RAM copy, as root: past the
	// squashfs' own bytes when the file is padded (its mounted root never
	// reads there), else one byte added at the end.
	layer := contract.LiveMediaDir + "/" + contract.BaseLayer
	c.on(bad).Sh(t, ctx, fmt.Sprintf(`f=%s
used=$(od -An -j 40 -N 8 -t u8 "$f" | tr -d ' ')
size=$(stat -c %%s "$f")
if [ "$size" -gt "$used" ]; then printf 'X' | dd of="$f" bs=1 seek=$((size - 1)) conv=notrunc status=none; else printf 'X' >>"$f"; fi
sha256sum "$f"`, layer))

	start := time.Now()
	if err := c.Start(laterVM); err != nil {
		t.Fatal(err)
	}
	all := c.waitNodes(t, ctx, "the third node up", func(ns []registry.Node) bool { return len(upNodes(ns)) == len(others)+2 })
	t.Logf("%s booted and registered in %s (power-on to registered)", laterVM, time.Since(start).Round(time.Second))
	var third string
	for _, n := range upNodes(all) {
		if n.Name != "node1" && !slices.Contains(others, n.Name) {
			third = n.Name
		}
	}
	after := getSwarm(t, ctx, c)
	t.Logf("node1's swarm after: node1 sent %d bytes (%d whole layers), peers %d bytes (%d layers), image %d bytes, %d redirects, %d refused as bad, %d broken off; peers %+v",
		after.Node1Bytes, after.Node1Layers, after.PeerBytes, after.PeerLayers, after.ImageBytes, after.Redirects, after.BadReports, after.FailReports, after.Peers)
	if after.FromPeers[contract.BaseLayer] < 1 {
		t.Errorf("no node got %s from a peer: %+v", contract.BaseLayer, after.FromPeers)
	}
	if after.ImageBytes <= 0 || after.Node1Bytes >= 3*after.ImageBytes {
		t.Errorf("node1 sent %d bytes of layers, want less than three copies of the %d-byte image", after.Node1Bytes, after.ImageBytes)
	}
	if after.BadReports < 1 {
		t.Errorf("the corrupted copy on %s (%s) was not reported", bad, first.Addr)
	}
	for _, p := range after.Peers {
		if p.Addr == first.Addr && p.Bad == "" {
			t.Errorf("node1 still offers %s (%s), which served a corrupted copy: %+v", bad, p.Addr, p)
		}
	}
	// The new node runs from its verified RAM copy, and serves it in turn.
	// It is reached by its VM's name: the guest agents' names of a VM
	// started after Up may not be known yet.
	g := c.on(laterVM)
	out := g.Sh(t, ctx, "cat /proc/cmdline; cat "+contract.RunDir+"/"+contract.VerifiedLayersFile+"; sha256sum "+layer+"; journalctl -b -u clusterdebian-node --no-pager | grep -i swarm || true")
	t.Logf("%s:\n%s", third, out)
	cl, err := contract.ParseCmdline(strings.SplitN(out, "\n", 2)[0])
	if err != nil {
		t.Fatalf("%s's command line: %v", third, err)
	}
	if sum := cl.LayerSums[contract.BaseLayer]; sum == "" || !strings.Contains(out, sum+"  "+contract.BaseLayer+"\n") ||
		!strings.Contains(out, sum+"  "+layer) {
		t.Errorf("%s's base layer is not verified as node1's (%q)", third, sum)
	}
	// Leave as the cluster was for the steps after: the third node powers
	// off cleanly (its agent leaves the registry).
	g.Sh(t, ctx, "systemd-run --no-block systemctl poweroff")
	testsupport.WaitFor(t, ctx, laterVM+" to stop", 3*time.Second, 5*time.Minute, func() bool {
		for _, v := range c.List(ctx) {
			if v.VM == laterVM {
				return !v.Running
			}
		}
		return false
	}, func() string { return laterVM + " still runs" })
	c.waitNodes(t, ctx, third+" gone", func(ns []registry.Node) bool { return len(upNodes(ns)) == len(others)+1 })
}

// probeLease puts a new machine (a namespace of this machine, fresh MAC) on
// the cluster's switch, has the head lease it an address, and takes it off
// again.
func probeLease(t *testing.T, ctx context.Context, vc *vm.Cluster) netip.Addr {
	t.Helper()
	probe, mac := newNS(t), randomMAC()
	lease, unplug := leaseOnSwitch(t, ctx, vc, probe, "vprobe", mac, "DHCP from a new machine")
	defer unplug()
	ip, _ := netip.AddrFromSlice(lease.ACK.YourIPAddr.To4())
	t.Logf("new machine %s leased %s", mac, ip)
	return ip
}
