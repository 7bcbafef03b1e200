//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// TestSecureBoot boots the default image on PCs as they ship: UEFI with
// Secure Boot on and Microsoft's keys (Debian's OVMF build for it), no key
// enrolled by anyone. node1 boots the ISO from a USB stick, through
// Debian's signed shim, GRUB and kernel; a node boots from node1 with the
// firmware's own PXE client, through the same chain that node1 serves.
// The steps check that both kernels run with Secure Boot (and so kernel
// lockdown) on, and that what ClusterDebian does still works under
// lockdown: the NFS export of node1's overlay root, the guest agent, exec,
// ssh and MPI across the two. (TestBootBIOSFromCD and TestBootUEFIFromUSB
// boot the same ISO without Secure Boot.)
func TestSecureBoot(t *testing.T) {
	needE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	s := testsupport.NewScenario(t)
	boot := []string{"boot"}

	var (
		c              vcluster
		node, nodeAddr string // the node besides node1
	)
	s.Step("boot", nil, func(st *testing.T) {
		out, _ := defaultImage(st)
		var err error
		c, err = upCluster(t, ctx, vm.UpOptions{Name: "e2esb", ISO: filepath.Join(out, imagebuild.ISOName),
			Nodes: 1, MemoryMiB: 2048, NodeMemoryMiB: 1536, SecureBoot: true})
		if err != nil {
			st.Fatalf("vm up --secure-boot: %v", err)
		}
		nodes := c.waitNodes(st, ctx, "two nodes up", func(ns []registry.Node) bool { return len(upNodes(ns)) == 2 })
		for _, n := range nodes {
			if n.Name != "node1" {
				node, nodeAddr = n.Name, n.IP
			}
		}
		st.Logf("node1 and %s are up", node)
	})

	s.Step("secure boot on", boot, func(t *testing.T) {
		// The kernel found Secure Boot on (so it locked itself down), and
		// mokutil reads the firmware's own variable.
		for _, n := range []string{"node1", node} {
			g := c.on(n)
			if out := g.Sh(t, ctx, "dmesg | grep -i 'secure boot' || true"); !regexp.MustCompile(`(?i)secure ?boot enabled`).MatchString(out) {
				t.Errorf("%s's kernel does not log Secure Boot enabled:\n%s", n, out)
			}
			if out, code := g.Try(t, ctx, "mokutil --sb-state"); code != 0 || !strings.Contains(out, "SecureBoot enabled") {
				t.Errorf("%s: mokutil --sb-state exited %d: %s", n, code, out)
			}
			if out := g.Sh(t, ctx, "cat /sys/kernel/security/lockdown"); !strings.Contains(out, "[integrity]") && !strings.Contains(out, "[confidentiality]") {
				t.Errorf("%s: kernel lockdown is off: %s", n, out)
			}
		}
	})

	s.Step("boot menu under secure boot", boot, func(t *testing.T) {
		// Debian's signed GRUB drew node1's menu; the memory test, which is
		// not signed, says so instead of failing.
		serial := c.Machines()[0].Serial()
		for _, want := range []string{"*ClusterDebian (node1, the head)", "Memory test (memtest86+): not with Secure Boot on", "Booting `ClusterDebian (node1, the head)'"} {
			if !strings.Contains(serial, want) {
				t.Errorf("node1's console lacks %q", want)
			}
		}
	})

	s.Step("the node came through shim and GRUB", boot, func(t *testing.T) {
		raw := c.on("node1").Sh(t, ctx, `exec 3<>/dev/tcp/127.0.0.1/80
printf 'GET /api/v1/boot HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
cat <&3`)
		_, body, _ := strings.Cut(raw, "\r\n\r\n")
		var stages []bootstage.Node
		if err := json.Unmarshal([]byte(body), &stages); err != nil {
			t.Fatalf("/api/v1/boot: %v: %q", err, raw)
		}
		ip := nodeAddr
		var n bootstage.Node
		for _, s := range stages {
			if s.IP == ip {
				n = s
			}
		}
		for _, want := range []struct{ stage, detail string }{
			{bootstage.GRUBLoaded, "tftp grubx64.efi"}, {bootstage.ScriptFetched, "grub"}, {bootstage.KernelFetched, "vmlinuz"},
			{bootstage.InitrdFetched, "initrd-nfs.img"}, {bootstage.Registered, ""},
		} {
			if !hasStage(n, want.stage, want.detail) {
				t.Errorf("%s (%s) lacks the boot stage %s %s: %+v", node, ip, want.stage, want.detail, n.History)
			}
		}
		if hasStage(n, bootstage.IPXELoaded, "") {
			t.Errorf("%s loaded iPXE, which Secure Boot refuses: %+v", node, n.History)
		}
	})

	s.Step("lockdown", boot, func(t *testing.T) {
		// What lockdown forbids, it forbids: an unsigned kernel module
		// (the signed one's copy with its signature cut off) and
		// /dev/mem. The signed module loads.
		out, code := c.on(node).Try(t, ctx, `set -e
f=$(modinfo -n dummy)
case "$f" in *.xz) xz -dc "$f" ;; *.zst) zstd -qdc "$f" ;; *.gz) gzip -dc "$f" ;; *) cat "$f" ;; esac > /tmp/signed.ko
# The signature's length is the big-endian 32 bits before the 28-byte
# "~Module signature appended~\n"; 12 bytes of its header before them.
len=$(tail -c 32 /tmp/signed.ko | head -c 4 | od -An -tu1 | awk '{print $1*16777216+$2*65536+$3*256+$4}')
head -c $(( $(stat -c %s /tmp/signed.ko) - len - 40 )) /tmp/signed.ko > /tmp/unsigned.ko
if insmod /tmp/unsigned.ko 2>&1; then echo "UNSIGNED LOADED"; rmmod dummy; fi
modprobe dummy && echo "signed loaded" && rmmod dummy
if dd if=/dev/mem of=/dev/null bs=1 count=1 2>&1; then echo "DEV MEM READ"; fi
dmesg | grep -i lockdown | tail -n 3`)
		t.Logf("%s:\n%s", node, out)
		if code != 0 || strings.Contains(out, "UNSIGNED LOADED") || strings.Contains(out, "DEV MEM READ") || !strings.Contains(out, "signed loaded") {
			t.Errorf("%s under lockdown (exit %d): an unsigned module or /dev/mem was allowed, or the signed module did not load:\n%s", node, code, out)
		}
	})

	s.Step("shared root over NFS", boot, func(t *testing.T) {
		// node1 exports its overlay root under lockdown, and the node runs
		// on it.
		checkExports(t, c.on("node1").Sh(t, ctx, "exportfs -s"), "/", nodeAddr)
		if fs := strings.TrimSpace(c.on(node).Sh(t, ctx, "findmnt -n -o FSTYPE /")); !strings.HasPrefix(fs, "nfs") {
			t.Errorf("%s's root is %q, want node1's over NFS", node, fs)
		}
		stamp := time.Now().Format("150405.000")
		c.on(node).Sh(t, ctx, "echo "+stamp+" > /home/user/sb-"+stamp)
		if got := strings.TrimSpace(c.on("node1").Sh(t, ctx, "cat /home/user/sb-"+stamp)); got != stamp {
			t.Errorf("node1 reads %q in the file %s wrote", got, node)
		}
	})

	s.Step("exec and mpi", boot, func(t *testing.T) {
		ex := c.on("node1").Sh(t, ctx, "clusterdebian exec -- hostname")
		for _, n := range []string{"node1", node} {
			if !strings.Contains(ex, n+": "+n+"\n") {
				t.Errorf("exec -- hostname lacks %s:\n%s", n, ex)
			}
		}
		compileMPI(t, ctx, c.on("node1"))
		mpi := c.on("node1").Sh(t, ctx, "cd /home/user && runuser -u user -- mpirun -np 2 --host node1,"+node+" ./allreduce")
		t.Logf("mpirun:\n%s", mpi)
		ranks := regexp.MustCompile(`rank (\d) of 2 on (\S+) sum 1`).FindAllStringSubmatch(mpi, -1)
		hosts := map[string]bool{}
		for _, r := range ranks {
			hosts[r[2]] = true
		}
		if len(ranks) != 2 || !hosts["node1"] || !hosts[node] {
			t.Errorf("want ranks 0 and 1 on node1 and %s with sum 1, got:\n%s", node, mpi)
		}
	})
}
