//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// The localnode1 test turns an installed Debian machine into node1: a VM
// booted from a disk image made here with mmdebstrap (not the live ISO),
// with two NICs: uplink0 on QEMU's user-mode network (restrict=on: the
// default route of a lab LAN, where no packet leaves QEMU) and cluster0 on
// a bridge in a test namespace, where a second VM network-boots from it.
// The test binary and the default image's netboot files reach the guest
// over a read-only 9p share.

// MACs of the installed host's NICs; its disk names them by MAC
// (systemd .link files), so the names do not depend on PCI order.
const (
	hostUplinkMAC  = "52:54:00:cd:fe:01"
	hostClusterMAC = "52:54:00:cd:fe:02"
	pxeNodeMAC     = "52:54:00:cd:fe:10"
	shareTag       = "cdshare"
)

// hostDiskOptions describe the installed host: a minimal trixie with the
// kernel, ifupdown (as a Debian installer leaves it) with a static address
// on the uplink, the guest agent for the test, a user with uid 1000 as in
// the image, and what localnode1 installs already in place, since the
// guest has no way to a mirror.
func hostDiskOptions() vm.DiskOptions {
	return vm.DiskOptions{
		Suite:  "trixie",
		Mirror: config.Default().ResolvedMirror(),
		Packages: []string{"linux-image-amd64", "systemd-sysv", "udev", "kmod", "ifupdown", "iproute2", "iputils-ping", "procps",
			"openssh-server", "openssh-client", "nfs-kernel-server", "nfs-common", "ipxe", "openmpi-bin", "libopenmpi-dev",
			"build-essential", "qemu-guest-agent", "sudo", "initramfs-tools"},
		Hooks: []string{
			`echo labhost > "$1/etc/hostname" && printf '127.0.0.1 localhost\n127.0.1.1 labhost\n' > "$1/etc/hosts"`,
			`echo '/dev/vda / ext4 errors=remount-ro 0 1' > "$1/etc/fstab"`,
			`mkdir -p "$1/etc/systemd/network" && printf '[Match]\nMACAddress=` + hostUplinkMAC + `\n[Link]\nName=uplink0\n' > "$1/etc/systemd/network/10-uplink0.link" && printf '[Match]\nMACAddress=` + hostClusterMAC + `\n[Link]\nName=cluster0\n' > "$1/etc/systemd/network/10-cluster0.link"`,
			`printf 'source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nauto uplink0\niface uplink0 inet static\n    address 10.0.2.15/24\n    gateway 10.0.2.2\n' > "$1/etc/network/interfaces"`,
			`chroot "$1" useradd -m -u 1000 -U -s /bin/bash user`,
			`chroot "$1" sh -c 'echo root:root | chpasswd'`,
		},
	}
}

// guest runs commands in a VM through its guest agent.
type guest struct {
	t    *testing.T
	name string
	sock string
}

// try runs a bash script as root and returns its output and exit code.
func (g guest) try(ctx context.Context, script string) (string, int) {
	g.t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	stdout, stderr, code, err := vm.QGAExec(cctx, g.sock, "/bin/bash", []string{"-c", script})
	if err != nil {
		g.t.Fatalf("%s: exec %q: %v", g.name, script, err)
	}
	return string(stdout) + string(stderr), code
}

// sh runs a bash script as root and fails the test when it fails.
func (g guest) sh(ctx context.Context, script string) string {
	g.t.Helper()
	out, code := g.try(ctx, script)
	if code != 0 {
		g.t.Fatalf("%s: %q exited %d:\n%s", g.name, script, code, out)
	}
	return out
}

// waitAgent waits until the guest agent answers, that is the guest booted.
func (g guest) waitAgent(ctx context.Context, m *vm.Machine) {
	g.t.Helper()
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := vm.QGAPing(pctx, g.sock)
		cancel()
		if err == nil {
			return
		}
		if !m.Running() {
			g.t.Fatalf("%s stopped while booting:\n%s", g.name, tail(m.Serial(), 60))
		}
		if ctx.Err() != nil {
			g.t.Fatalf("%s: no guest agent: %v\n%s", g.name, err, tail(m.Serial(), 60))
		}
		time.Sleep(3 * time.Second)
	}
}

// TestLocalNode1 sets up localnode1 on an installed Debian VM and checks
// the refusal of the default-route interface, the service, address and
// exports it makes, that a second run changes nothing, a node that boots
// from the host and runs MPI with it, shutdown leaving the host on, and
// that --remove leaves nothing behind.
func TestLocalNode1(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	out, _ := defaultImage(t)

	start := time.Now()
	disk, err := vm.InstalledDisk(ctx, withLog(hostDiskOptions(), t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("installed-system disk %s (cached: %v) in %.0f s", disk.Dir, disk.Cached, time.Since(start).Seconds())

	tmp := t.TempDir()
	overlay := filepath.Join(tmp, "host.qcow2")
	if err := disk.Overlay(ctx, overlay); err != nil {
		t.Fatal(err)
	}
	ns := newNS(t)
	if err := ns.AddBridge(ctx, "br0"); err != nil {
		t.Fatal(err)
	}
	for _, tap := range []string{"tap0", "tap1"} {
		if err := ns.AddTap(ctx, tap, "br0"); err != nil {
			t.Fatal(err)
		}
	}
	hostDir := filepath.Join(tmp, "host")
	args := append(disk.BootArgs(""), vm.UserNIC("up0", hostUplinkMAC)...)
	args = append(args, vm.ShareDir(shareTag, workDir)...)
	hostVM, err := vm.Start(vm.Spec{
		Name: "localnode1-host", Accel: "tcg", MemoryMiB: 2048, CPUs: 2,
		Disk:       overlay,
		NICs:       []vm.NIC{{Tap: "tap0", MAC: hostClusterMAC}},
		NetNS:      ns.Name,
		Dir:        hostDir,
		GuestAgent: true,
		ExtraArgs:  args,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("host serial console tail:\n%s", tail(hostVM.Serial(), 60))
		}
		hostVM.Stop()
	})
	host := guest{t, "host", filepath.Join(hostDir, vm.QGASocket)}
	start = time.Now()
	bctx, bcancel := context.WithTimeout(ctx, 10*time.Minute)
	host.waitAgent(bctx, hostVM)
	bcancel()
	// The agent starts early; the network and NFS come up later in the boot.
	host.try(ctx, "systemctl is-system-running --wait")
	t.Logf("the installed host booted in %.0f s", time.Since(start).Seconds())

	host.sh(ctx, "mkdir -p /mnt/cd && mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288 "+shareTag+" /mnt/cd")
	cd := "/mnt/cd/" + filepath.Base(cdBinary)
	from := "/mnt/cd/" + filepath.Base(out)
	if got := host.sh(ctx, "ip route show default"); !strings.Contains(got, "uplink0") {
		t.Fatalf("the host's default route is not on uplink0: %s", got)
	}
	before, _ := host.try(ctx, "sha256sum /etc/hosts /etc/openmpi/openmpi-default-hostfile /etc/network/interfaces; ls /etc/exports.d /etc/systemd/system /usr/local/bin /etc/ssh 2>&1")

	// The interface of the default route is refused, and nothing changes.
	res, code := host.try(ctx, cd+" localnode1 --interface uplink0 --from "+from+" --yes")
	t.Logf("localnode1 on uplink0 (exit %d):\n%s", code, res)
	if code == 0 || !strings.Contains(res, "default route") || !strings.Contains(res, "--force") {
		t.Errorf("localnode1 on the default-route interface: exit %d, want a refusal naming the default route and --force:\n%s", code, res)
	}
	if got, _ := host.try(ctx, "ls /var/lib/clusterdebian /etc/systemd/system/clusterdebian-head.service 2>&1"); !strings.Contains(got, "No such file") {
		t.Errorf("the refused run changed something:\n%s", got)
	}

	// Without --yes and no terminal to ask on, nothing is done.
	res, code = host.try(ctx, cd+" localnode1 --interface cluster0 --from "+from+" </dev/null")
	if code == 0 || !strings.Contains(res, "plan:") || !strings.Contains(res, "--yes") {
		t.Errorf("localnode1 without --yes: exit %d, want the plan and a refusal naming --yes:\n%s", code, res)
	}

	start = time.Now()
	res = host.sh(ctx, cd+" localnode1 --interface cluster0 --from "+from+" --yes")
	t.Logf("localnode1 took %.0f s:\n%s", time.Since(start).Seconds(), res)
	if !strings.Contains(res, `nodes.root = "ram"`) || !strings.Contains(res, "done:") {
		t.Errorf("localnode1 output lacks the RAM root or its end:\n%s", res)
	}

	// The service runs and starts at boot; the address is there, and no
	// export yet: /home goes to each node that boots from the head, by its
	// address, never to the subnet or to everyone.
	if got := host.sh(ctx, "systemctl is-enabled clusterdebian-head; systemctl is-active clusterdebian-head"); got != "enabled\nactive\n" {
		t.Errorf("clusterdebian-head: %q, want enabled and active", got)
	}
	if got := host.sh(ctx, "ip -4 -o addr show dev cluster0"); !strings.Contains(got, "10.99.0.1/24") {
		t.Errorf("cluster0 lacks 10.99.0.1/24: %s", got)
	}
	exports := host.sh(ctx, "exportfs -s")
	if regexp.MustCompile(`(?m)^/home\s`).MatchString(exports) {
		t.Errorf("exportfs -s exports /home before any node booted:\n%s", exports)
	}
	if regexp.MustCompile(`(?m)^/\s`).MatchString(exports) || strings.Contains(exports, "*(") {
		t.Errorf("the host's root is exported, or something is exported to everyone:\n%s", exports)
	}
	if got := host.sh(ctx, "hostname"); strings.TrimSpace(got) != "labhost" {
		t.Errorf("the host's name changed to %q", got)
	}
	var nodes []registry.Node
	waitFor(t, ctx, "the head registering node1", func() bool {
		got, code := host.try(ctx, "clusterdebian status --json")
		nodes = nil
		return code == 0 && json.Unmarshal([]byte(got), &nodes) == nil && len(nodes) == 1 && nodes[0].Name == "node1"
	})

	// A second run changes nothing.
	res = host.sh(ctx, cd+" localnode1 --interface cluster0 --from "+from+" --yes")
	if !strings.Contains(res, "no changes") || strings.Contains(res, "plan:") {
		t.Errorf("the second run of localnode1 is not a no-op:\n%s", res)
	}

	testLocalNode1Node(t, ctx, host, ns.Name, tmp)

	// shutdown leaves a permanent node1 on.
	if plan := host.sh(ctx, "clusterdebian shutdown --dry-run"); !strings.Contains(plan, "leave node1 on") {
		t.Errorf("shutdown --dry-run on a localnode1 host does not leave it on:\n%s", plan)
	}

	// --remove leaves no service, export, address or file behind.
	res = host.sh(ctx, cd+" localnode1 --remove --yes")
	t.Logf("localnode1 --remove:\n%s", res)
	if got, _ := host.try(ctx, "systemctl is-active clusterdebian-head; systemctl is-enabled clusterdebian-head; ls /etc/systemd/system/clusterdebian-head.service"); strings.Contains(got, "\nactive") || strings.HasPrefix(got, "active") || strings.Contains(got, "enabled") {
		t.Errorf("the service is still there after --remove:\n%s", got)
	}
	if got := host.sh(ctx, "exportfs -s; echo end"); got != "end\n" {
		t.Errorf("exports left after --remove:\n%s", got)
	}
	if got := host.sh(ctx, "ip -4 -o addr show dev cluster0"); strings.Contains(got, "10.99.0.") {
		t.Errorf("cluster0 keeps an address after --remove: %s", got)
	}
	if got, _ := host.try(ctx, "ls -d /var/lib/clusterdebian /etc/clusterdebian /etc/cluster /etc/network/interfaces.d/clusterdebian-cluster0 /etc/exports.d/clusterdebian.exports /etc/ssh/ssh_config.d/clusterdebian.conf 2>/dev/null; grep -l clusterdebian /etc/hosts /etc/ssh/ssh_known_hosts 2>/dev/null; echo end"); got != "end\n" {
		t.Errorf("files left after --remove:\n%s", got)
	}
	after, _ := host.try(ctx, "sha256sum /etc/hosts /etc/openmpi/openmpi-default-hostfile /etc/network/interfaces; ls /etc/exports.d /etc/systemd/system /usr/local/bin /etc/ssh 2>&1")
	if after != before {
		t.Errorf("--remove did not restore the host:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if res := host.sh(ctx, cd+" localnode1 --remove --yes"); !strings.Contains(res, "nothing to remove") {
		t.Errorf("a second --remove: %s", res)
	}
}

// testLocalNode1Node network-boots a second VM from the host and runs an
// MPI job across the host and the node.
func testLocalNode1Node(t *testing.T, ctx context.Context, host guest, nsName, tmp string) {
	t.Helper()
	if os.Getenv("E2E_LOCALNODE1_NODE") == "0" {
		t.Log("E2E_LOCALNODE1_NODE=0: no node boots")
		return
	}
	nodeDir := filepath.Join(tmp, "node")
	node, err := vm.Start(vm.Spec{
		Name: "localnode1-node", Accel: "tcg", MemoryMiB: 2048, CPUs: 1,
		NICs:  []vm.NIC{{Tap: "tap1", MAC: pxeNodeMAC, Boot: true}},
		NetNS: nsName, Dir: nodeDir, GuestAgent: true, Reboot: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node serial console tail:\n%s", tail(node.Serial(), 80))
		}
		node.Stop()
	})
	start := time.Now()
	var name string
	waitFor(t, ctx, "the node registering", func() bool {
		got, code := host.try(ctx, "clusterdebian status --json")
		var nodes []registry.Node
		if code != 0 || json.Unmarshal([]byte(got), &nodes) != nil {
			return false
		}
		for _, n := range nodes {
			if n.Role != registry.RoleHead && n.State == registry.StateUp {
				name = n.Name
				return true
			}
		}
		return !node.Running()
	})
	if !node.Running() {
		t.Fatal("the node VM stopped")
	}
	t.Logf("%s booted from the host and registered in %.0f s", name, time.Since(start).Seconds())
	// /home goes to that node's address only.
	exports := host.sh(ctx, "exportfs -s")
	if m := regexp.MustCompile(`(?m)^/home\s+(\S+)\(`).FindAllStringSubmatch(exports, -1); len(m) != 1 || strings.Contains(m[0][1], "/") {
		t.Errorf("exportfs -s after %s booted, want /home to its address alone:\n%s", name, exports)
	}

	// /home is the host's: a file written there shows on the node, to its
	// owner (root on a node is squashed: it is not root on the host's files).
	stamp := fmt.Sprint(time.Now().UnixNano())
	host.sh(ctx, "runuser -u user -- sh -c 'echo "+stamp+" > /home/user/stamp'")
	node1 := guest{t, name, filepath.Join(nodeDir, vm.QGASocket)}
	// The agent registers before the guest agent is up.
	actx, acancel := context.WithTimeout(ctx, 5*time.Minute)
	node1.waitAgent(actx, node)
	acancel()
	if got := node1.sh(ctx, "runuser -u user -- cat /home/user/stamp"); strings.TrimSpace(got) != stamp {
		t.Errorf("%s sees %q in the host's /home/user/stamp", name, got)
	}

	// ssh from the node to the host as node1, verified: the head certified
	// the host's own key.
	if got := node1.sh(ctx, "runuser -u user -- ssh -o BatchMode=yes node1 hostname"); strings.TrimSpace(got) != "labhost" {
		t.Errorf("ssh node1 hostname from %s = %q, want labhost", name, got)
	}

	// MPI across the host and the node with Open MPI's default hostfile
	// (the head's), one rank per machine, over the cluster network only.
	host.sh(ctx, "cat > /home/user/allreduce.c <<'EOF'\n"+mpiProgram+"EOF\nchown user: /home/user/allreduce.c")
	host.sh(ctx, "cd /home/user && runuser -u user -- mpicc -o allreduce allreduce.c")
	mpi := host.sh(ctx, "cd /home/user && runuser -u user -- mpirun -np 2 --map-by node "+
		"--mca btl_tcp_if_include 10.99.0.0/24 --mca oob_tcp_if_include 10.99.0.0/24 ./allreduce")
	t.Logf("mpirun:\n%s", mpi)
	ranks := regexp.MustCompile(`rank (\d) of 2 on (\S+) sum 1`).FindAllStringSubmatch(mpi, -1)
	if len(ranks) != 2 || ranks[0][2] == ranks[1][2] {
		t.Errorf("want two ranks on two machines, summing to 1:\n%s", mpi)
	}
}

// waitFor polls cond every few seconds; the deadline only guards against
// a hang.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("waiting for %s: gave up", what)
		}
		time.Sleep(3 * time.Second)
	}
}

// withLog sends mmdebstrap's output to the test log.
func withLog(o vm.DiskOptions, t *testing.T) vm.DiskOptions {
	o.Log = testWriter{t}
	return o
}
