//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
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

// qgaGuest runs commands in a VM through the guest agent at sock.
func qgaGuest(name, sock string) testsupport.Guest {
	return testsupport.Guest{Name: name, Exec: func(ctx context.Context, argv ...string) (string, string, int, error) {
		stdout, stderr, code, err := vm.QGAExec(ctx, sock, argv[0], argv[1:])
		return string(stdout), string(stderr), code, err
	}}
}

// waitAgent waits until the guest agent at sock answers, that is the guest
// booted, and fails t if m stops first.
func waitAgent(t *testing.T, ctx context.Context, name, sock string, m *vm.Machine) {
	t.Helper()
	testsupport.WaitFor(t, ctx, name+"'s guest agent", 3*time.Second, 10*time.Minute, func() bool {
		if !m.Running() {
			t.Fatalf("%s stopped while booting:\n%s", name, tail(m.Serial(), 60))
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return vm.QGAPing(pctx, sock) == nil
	}, func() string { return tail(m.Serial(), 60) })
}

// snapshotScript writes, to the file $1, what localnode1 may change on a
// host and --remove must put back: every file, folder and link under /etc,
// /var/lib and /usr/local with its type, mode, owner and target, each
// file's hash, the enabled units, the addresses, and sshd's effective
// configuration. It leaves out only state that the running system and the
// test themselves change, each for the reason given:
var snapshotScript = `set -e
files() {
	find /etc /var/lib /usr/local -xdev \( ` + strings.Join([]string{
	// the NFS server's records of the clients it served (the test's node)
	// (rmtab and its lock: mountd's record of NFSv3 mounts, which the
	// test's mount from outside the subnet makes)
	"-path /var/lib/nfs/nfsdcld", "-path /var/lib/nfs/v4recovery", "-path /var/lib/nfs/rmtab", "-path /var/lib/nfs/.rmtab.lock",
	// statd's reboot counter and monitor list, kept by the NFS services
	"-path /var/lib/nfs/state", "-path /var/lib/nfs/sm", "-path /var/lib/nfs/sm.bak",
	// when each systemd timer last ran
	"-path /var/lib/systemd/timers",
}, " -o ") + ` \) -prune -o "$@"
}
{
	echo "## files"
	files -printf '%p %y %m %u:%g %l\n' | sort
	echo "## content"
	files -type f -print0 | sort -z | xargs -0 -r sha256sum
	echo "## enabled units"
	systemctl list-unit-files --state=enabled --no-legend | awk '{print $1}' | sort
	echo "## addresses"
	ip -o addr show | awk '{print $2, $3, $4}' | sort
	echo "## sshd -T"
	sshd -T | sort
} > "$1"
`

// snapshot takes a snapshot (snapshotScript) of host under the name label,
// in /root (outside what it lists).
func snapshot(t *testing.T, ctx context.Context, host testsupport.Guest, label string) {
	t.Helper()
	host.Sh(t, ctx, "snap() {\n"+snapshotScript+"}\nsnap /root/snapshot-"+label)
}

// snapshotDiff takes a snapshot of host now and returns how it differs
// from the one called label: empty when nothing changed.
func snapshotDiff(t *testing.T, ctx context.Context, host testsupport.Guest, label string) string {
	t.Helper()
	snapshot(t, ctx, host, label+"-now")
	out, code := host.Try(t, ctx, "diff -u /root/snapshot-"+label+" /root/snapshot-"+label+"-now")
	switch code {
	case 0:
		return ""
	case 1:
		return out
	}
	t.Fatalf("diff of the snapshots: exit %d: %s", code, out)
	return ""
}

// TestLocalNode1 sets up localnode1 on an installed Debian VM, once, and
// checks as steps: the refusal of the default-route interface and of a run
// without --yes (the host unchanged), the service, address and exports it
// makes, that a second run changes nothing, a node that boots from the
// host and runs MPI with it (and an address outside the subnet that cannot
// mount /home), a real shutdown that powers the node off and leaves the
// host on, and that --remove leaves the host as it was.
func TestLocalNode1(t *testing.T) {
	needE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	s := testsupport.NewScenario(t)
	tmp := t.TempDir()

	var (
		host     testsupport.Guest
		cd, from string // the binary and the image's folder, in the host
		ns       string // the test namespace with the cluster bridge
	)
	s.Step("host boots", nil, func(st *testing.T) {
		out, _ := defaultImage(st)
		start := time.Now()
		o := hostDiskOptions()
		o.Log = testsupport.LogWriter(st)
		disk, err := vm.InstalledDisk(ctx, o)
		if err != nil {
			st.Fatal(err)
		}
		st.Logf("installed-system disk %s (cached: %v) in %.0f s", disk.Dir, disk.Cached, time.Since(start).Seconds())
		overlay := filepath.Join(tmp, "host.qcow2")
		if err := disk.Overlay(ctx, overlay); err != nil {
			st.Fatal(err)
		}
		n := newNS(t)
		ns = n.Name
		if err := n.AddBridge(ctx, "br0"); err != nil {
			st.Fatal(err)
		}
		for _, tap := range []string{"tap0", "tap1"} {
			if err := n.AddTap(ctx, tap, "br0"); err != nil {
				st.Fatal(err)
			}
		}
		hostDir := filepath.Join(tmp, "host")
		args := append(disk.BootArgs(""), vm.UserNIC("up0", hostUplinkMAC)...)
		args = append(args, vm.ShareDir(shareTag, workDir)...)
		hostVM, err := vm.Start(vm.Spec{
			Name: "localnode1-host", Accel: "tcg", MemoryMiB: 2048, CPUs: 2,
			Disk:       overlay,
			NICs:       []vm.NIC{{Tap: "tap0", MAC: hostClusterMAC}},
			NetNS:      ns,
			Dir:        hostDir,
			GuestAgent: true,
			ExtraArgs:  args,
		})
		if err != nil {
			st.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("host serial console tail:\n%s", tail(hostVM.Serial(), 60))
			}
			hostVM.Stop()
		})
		sock := filepath.Join(hostDir, vm.QGASocket)
		host = qgaGuest("host", sock)
		start = time.Now()
		waitAgent(st, ctx, "host", sock, hostVM)
		// The agent starts early; the network and NFS come up later in
		// the boot.
		host.Try(st, ctx, "systemctl is-system-running --wait")
		st.Logf("the installed host booted in %.0f s", time.Since(start).Seconds())

		host.Sh(st, ctx, "mkdir -p /mnt/cd && mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288 "+shareTag+" /mnt/cd")
		cd = "/mnt/cd/" + filepath.Base(cdBinary)
		from = "/mnt/cd/" + filepath.Base(out)
		if got := host.Sh(st, ctx, "ip route show default"); !strings.Contains(got, "uplink0") {
			st.Fatalf("the host's default route is not on uplink0: %s", got)
		}
		snapshot(st, ctx, host, "before")
	})
	hostUp := []string{"host boots"}

	s.Step("refuses the default-route interface", hostUp, func(t *testing.T) {
		res, code := host.Try(t, ctx, cd+" localnode1 --interface uplink0 --from "+from+" --yes")
		t.Logf("localnode1 on uplink0 (exit %d):\n%s", code, res)
		if code == 0 || !strings.Contains(res, "default route") || !strings.Contains(res, "--force") {
			t.Errorf("localnode1 on the default-route interface: exit %d, want a refusal naming the default route and --force:\n%s", code, res)
		}
		if diff := snapshotDiff(t, ctx, host, "before"); diff != "" {
			t.Errorf("the refused run changed the host:\n%s", diff)
		}
	})

	s.Step("refuses without --yes", hostUp, func(t *testing.T) {
		// With no terminal to ask on, nothing is done.
		res, code := host.Try(t, ctx, cd+" localnode1 --interface cluster0 --from "+from+" </dev/null")
		if code == 0 || !strings.Contains(res, "plan:") || !strings.Contains(res, "--yes") {
			t.Errorf("localnode1 without --yes: exit %d, want the plan and a refusal naming --yes:\n%s", code, res)
		}
		if diff := snapshotDiff(t, ctx, host, "before"); diff != "" {
			t.Errorf("the run without --yes changed the host:\n%s", diff)
		}
	})

	s.Step("setup", hostUp, func(t *testing.T) {
		start := time.Now()
		res := host.Sh(t, ctx, cd+" localnode1 --interface cluster0 --from "+from+" --yes")
		t.Logf("localnode1 took %.0f s:\n%s", time.Since(start).Seconds(), res)
		if !strings.Contains(res, `nodes.root = "ram"`) || !strings.Contains(res, "done:") {
			t.Errorf("localnode1 output lacks the RAM root or its end:\n%s", res)
		}
	})
	setUp := []string{"setup"}

	s.Step("service, address and exports", setUp, func(t *testing.T) {
		// The service runs and starts at boot; the address is there, and
		// no export yet: /home goes to each node that boots from the
		// head, by its address, never to the subnet or to everyone.
		if got := host.Sh(t, ctx, "systemctl is-enabled clusterdebian-head; systemctl is-active clusterdebian-head"); got != "enabled\nactive\n" {
			t.Errorf("clusterdebian-head: %q, want enabled and active", got)
		}
		if got := host.Sh(t, ctx, "ip -4 -o addr show dev cluster0"); !strings.Contains(got, clusterHead+"/24") {
			t.Errorf("cluster0 lacks %s/24: %s", clusterHead, got)
		}
		checkExports(t, host.Sh(t, ctx, "exportfs -s"), "/home")
		if got := host.Sh(t, ctx, "hostname"); strings.TrimSpace(got) != "labhost" {
			t.Errorf("the host's name changed to %q", got)
		}
		waitRegistry(t, ctx, host, "the head registering node1", func(nodes []registry.Node) bool {
			return len(nodes) == 1 && nodes[0].Name == "node1"
		})
	})

	s.Step("second run changes nothing", setUp, func(t *testing.T) {
		res := host.Sh(t, ctx, cd+" localnode1 --interface cluster0 --from "+from+" --yes")
		if !strings.Contains(res, "no changes") || strings.Contains(res, "plan:") {
			t.Errorf("the second run of localnode1 is not a no-op:\n%s", res)
		}
	})

	var (
		node   testsupport.Guest
		nodeVM *vm.Machine
		name   string // the node's name in the registry
	)
	s.Step("a node boots from the host", setUp, func(st *testing.T) {
		if os.Getenv("E2E_LOCALNODE1_NODE") == "0" {
			st.Skip("E2E_LOCALNODE1_NODE=0: no node boots")
		}
		nodeDir := filepath.Join(tmp, "node")
		var err error
		nodeVM, err = vm.Start(vm.Spec{
			Name: "localnode1-node", Accel: "tcg", MemoryMiB: 2048, CPUs: 1,
			NICs:  []vm.NIC{{Tap: "tap1", MAC: pxeNodeMAC, Boot: true}},
			NetNS: ns, Dir: nodeDir, GuestAgent: true, Reboot: true,
		})
		if err != nil {
			st.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("node serial console tail:\n%s", tail(nodeVM.Serial(), 80))
			}
			nodeVM.Stop()
		})
		start := time.Now()
		waitRegistry(st, ctx, host, "the node registering", func(nodes []registry.Node) bool {
			if !nodeVM.Running() {
				st.Fatalf("the node VM stopped:\n%s", tail(nodeVM.Serial(), 60))
			}
			for _, n := range nodes {
				if n.Role != registry.RoleHead && n.State == registry.StateUp {
					name = n.Name
					return true
				}
			}
			return false
		})
		st.Logf("%s booted from the host and registered in %.0f s", name, time.Since(start).Seconds())
		// The agent registers before the guest agent is up.
		sock := filepath.Join(nodeDir, vm.QGASocket)
		waitAgent(st, ctx, name, sock, nodeVM)
		node = qgaGuest(name, sock)
	})
	nodeUp := []string{"a node boots from the host"}

	s.Step("home shared", nodeUp, func(t *testing.T) {
		// A file written in the host's /home shows on the node, to its
		// owner (root on a node is squashed: it is not root on the host's
		// files).
		stamp := fmt.Sprint(time.Now().UnixNano())
		host.Sh(t, ctx, "runuser -u user -- sh -c 'echo "+stamp+" > /home/user/stamp'")
		if got := node.Sh(t, ctx, "runuser -u user -- cat /home/user/stamp"); strings.TrimSpace(got) != stamp {
			t.Errorf("%s sees %q in the host's /home/user/stamp", name, got)
		}
	})

	s.Step("home exported to the booted node only", nodeUp, func(t *testing.T) {
		var ip string
		waitRegistry(t, ctx, host, name+" in the registry", func(nodes []registry.Node) bool {
			for _, n := range nodes {
				if n.Name == name {
					ip = n.IP
				}
			}
			return ip != ""
		})
		checkExports(t, host.Sh(t, ctx, "exportfs -s"), "/home", ip)
		mountFromOutside(t, ctx, host, node, "/home")
	})

	s.Step("ssh to the host", nodeUp, func(t *testing.T) {
		// As node1, verified: the head certified the host's own key.
		if got := node.Sh(t, ctx, "runuser -u user -- ssh -o BatchMode=yes node1 hostname"); strings.TrimSpace(got) != "labhost" {
			t.Errorf("ssh node1 hostname from %s = %q, want labhost", name, got)
		}
	})

	s.Step("mpi", nodeUp, func(t *testing.T) {
		// Across the host and the node with Open MPI's default hostfile
		// (the head's), one rank per machine. The host also has its uplink
		// (uplink0): no --mca flag is given, the head's system-wide MCA
		// parameters keep MPI on the cluster network.
		compileMPI(t, ctx, host)
		mpi := host.Sh(t, ctx, "cd /home/user && runuser -u user -- mpirun -np 2 --map-by node ./allreduce")
		t.Logf("mpirun:\n%s", mpi)
		ranks := regexp.MustCompile(`rank (\d) of 2 on (\S+) sum 1`).FindAllStringSubmatch(mpi, -1)
		if len(ranks) != 2 || ranks[0][2] == ranks[1][2] {
			t.Errorf("want two ranks on two machines, summing to 1:\n%s", mpi)
		}
	})

	s.Step("shutdown leaves the host on", setUp, func(t *testing.T) {
		if plan := host.Sh(t, ctx, "clusterdebian shutdown --dry-run"); !strings.Contains(plan, "leave node1 on") {
			t.Errorf("shutdown --dry-run on a localnode1 host does not leave it on:\n%s", plan)
		}
		bootID := host.Sh(t, ctx, "cat /proc/sys/kernel/random/boot_id")
		// The real thing: the node (if one booted) powers off, the host
		// does not.
		res, code := host.Try(t, ctx, "clusterdebian shutdown")
		t.Logf("clusterdebian shutdown (exit %d):\n%s", code, res)
		if code != 0 {
			t.Errorf("clusterdebian shutdown exited %d", code)
		}
		if s.Passed("a node boots from the host") {
			testsupport.WaitFor(t, ctx, "the node to power off", 3*time.Second, 10*time.Minute,
				func() bool { return !nodeVM.Running() }, func() string { return tail(nodeVM.Serial(), 20) })
		}
		// Still the same boot of the host, with its head running.
		if got := host.Sh(t, ctx, "cat /proc/sys/kernel/random/boot_id"); got != bootID {
			t.Errorf("the host rebooted during shutdown: boot id %s, then %s", bootID, got)
		}
		if got, _ := host.Try(t, ctx, "systemctl is-active clusterdebian-head"); got != "active\n" {
			t.Errorf("the head is %q after shutdown, want active", got)
		}
		if got := host.Sh(t, ctx, "systemctl is-system-running || true"); strings.Contains(got, "stopping") {
			t.Errorf("the host is going down: %s", got)
		}
	})

	s.Step("remove leaves nothing", setUp, func(t *testing.T) {
		res := host.Sh(t, ctx, cd+" localnode1 --remove --yes")
		t.Logf("localnode1 --remove:\n%s", res)
		if diff := snapshotDiff(t, ctx, host, "before"); diff != "" {
			t.Errorf("--remove did not put the host back as it was:\n%s", diff)
		}
		// What runs, beside what the snapshot lists.
		if got, _ := host.Try(t, ctx, "systemctl is-active clusterdebian-head"); strings.TrimSpace(got) == "active" {
			t.Error("the head still runs after --remove")
		}
		if got := host.Sh(t, ctx, "exportfs -s; echo end"); got != "end\n" {
			t.Errorf("exports left after --remove:\n%s", got)
		}
		if res := host.Sh(t, ctx, cd+" localnode1 --remove --yes"); !strings.Contains(res, "nothing to remove") {
			t.Errorf("a second --remove: %s", res)
		}
	})
}
