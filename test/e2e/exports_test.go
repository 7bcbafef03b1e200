//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/testsupport"
)

// The cluster network of the virtual clusters and of the localnode1 test:
// node1 is its .1.
const (
	clusterSubnet = "10.99.0.0/24"
	clusterHead   = "10.99.0.1"
)

// export is one client entry of `exportfs -s`.
type export struct{ path, client, options string }

// exportEntryRe is one client of an export: "10.99.0.0/24(rw,...)".
var exportEntryRe = regexp.MustCompile(`^([^(\s]+)\(([^)]*)\)$`)

// parseExports reads `exportfs -s`: a path, then its clients with their
// options, on the path's line or (for long paths) the next.
func parseExports(out string) ([]export, error) {
	var list []export
	path := ""
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "/") {
			path = f
			continue
		}
		m := exportEntryRe.FindStringSubmatch(f)
		if m == nil || path == "" {
			return nil, fmt.Errorf("cannot read %q in exportfs -s output", f)
		}
		list = append(list, export{path, m[1], m[2]})
	}
	return list, nil
}

// checkExports checks that the live export table (out, from `exportfs -s`)
// exports path to exactly the addresses clients (each booted node's own),
// and nothing to anybody else: no subnet, no wildcard. With no clients,
// nothing may be exported at all.
func checkExports(t *testing.T, out, path string, clients ...string) {
	t.Helper()
	list, err := parseExports(out)
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	var got []string
	for _, e := range list {
		if e.path != path {
			t.Errorf("exportfs -s exports %s to %s; only %s may be exported:\n%s", e.path, e.client, path, out)
			continue
		}
		got = append(got, e.client)
	}
	want := slices.Clone(clients)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("exportfs -s: want %s exported to %v exactly (each booted node's address), got %v:\n%s", path, want, got, out)
	}
}

// Addresses of the bystander that mountFromOutside puts on a node's wire:
// one outside the cluster subnet, and one inside it that no node has.
const (
	outsiderAddr = "10.98.0.7"
	insiderAddr  = "10.99.0.249"
)

// bystander is a machine on the cluster's wire that did not boot from
// node1: its address and prefix length, and its MAC ("": the kernel's).
type bystander struct {
	addr netip.Prefix
	mac  string
}

// mountFromOutside checks that a bystander on the cluster's wire, a
// machine that did not boot from node1 (head), cannot mount export from
// it, whether its address is outside the cluster subnet or inside it:
// node1 exports to each booted node's address only. The control is the
// node itself, which may mount it. NFSv3 only: see mountFromOutsideAt.
func mountFromOutside(t *testing.T, ctx context.Context, head, node testsupport.Guest, export string) {
	t.Helper()
	mountFromOutsideAt(t, ctx, head, node, clusterHead, export, []string{"3"},
		bystander{addr: netip.MustParsePrefix(outsiderAddr + "/24")}, bystander{addr: netip.MustParsePrefix(insiderAddr + "/24")})
}

// mountFromOutsideAt checks that each bystander, put on the wire of node
// in turn, cannot mount export from node1 (head, at headAddr) with any of
// the NFS versions vers ("3", "4"): the server says access denied.
//
// The bystander is a network namespace in the guest node, on a macvlan of
// the node's cluster NIC: its own MAC and address on the same wire, its
// own routes, and nothing of the node's own mounts or connections. node1
// gets a host route back to a bystander outside its subnet for the check,
// so that a refused mount is the export's doing, not a network that cannot
// answer: the bystander first shows that it reaches node1's NFS port. The
// control is the node itself, whose address node1 exports to, with NFSv3
// as the shared root uses (v3 mounts hold no client state on node1 that
// the bystanders could disturb for the node's own mounts).
func mountFromOutsideAt(t *testing.T, ctx context.Context, head, node testsupport.Guest, headAddr, export string, vers []string, bystanders ...bystander) {
	t.Helper()
	const ns = "cdoutsider"
	node.Sh(t, ctx, fmt.Sprintf(`set -e
dev=$(ip -o -4 route get %[1]s | sed -n 's/.* dev \([^ ]*\).*/\1/p')
ip netns add %[2]s
ip link add link "$dev" name out0 type macvlan mode bridge
ip link set out0 netns %[2]s
ip -n %[2]s link set lo up
ip -n %[2]s link set out0 up
mkdir -p /run/cdoutsider-mnt`, headAddr, ns))
	t.Cleanup(func() { node.Try(t, context.Background(), "ip netns del "+ns) })

	// node1 answers a bystander outside its subnet on its cluster
	// interface.
	headDev := strings.TrimSpace(head.Sh(t, ctx, fmt.Sprintf("ip -o -4 addr show | awk '$4 ~ /^%s\\// {print $2; exit}'", regexp.QuoteMeta(headAddr))))
	if headDev == "" {
		t.Fatalf("node1 has no interface with %s", headAddr)
	}
	for _, b := range bystanders {
		// mount tries to mount export from inside the namespace, lists
		// what it mounted and lets go of it; ip netns exec gives the
		// command a mount namespace of its own, so nothing stays mounted
		// on the node.
		mac := ""
		if b.mac != "" {
			mac = fmt.Sprintf("ip -n %[1]s link set out0 down && ip -n %[1]s link set out0 address %[2]s && ip -n %[1]s link set out0 up && ", ns, b.mac)
		}
		node.Sh(t, ctx, fmt.Sprintf("%[4]sip -n %[1]s addr flush dev out0 && ip -n %[1]s addr add %[2]s dev out0 && ip -n %[1]s route replace %[3]s/32 dev out0",
			ns, b.addr, headAddr, mac))
		head.Sh(t, ctx, fmt.Sprintf("ip route replace %s/32 dev %s", b.addr.Addr(), headDev))
		t.Cleanup(func() {
			head.Try(t, context.Background(), fmt.Sprintf("ip route del %s/32 dev %s", b.addr.Addr(), headDev))
		})
		// The bystander reaches node1's NFS server: a refusal below is
		// the export's answer.
		node.Sh(t, ctx, fmt.Sprintf("ip netns exec %s timeout 60 bash -c 'exec 3<>/dev/tcp/%s/2049'", ns, headAddr))
		for _, v := range vers {
			out, code := node.Try(t, ctx, fmt.Sprintf("ip netns exec %s timeout 120 sh -c 'mount -t nfs -o vers=%s,proto=tcp,retry=0 %s:%s /run/cdoutsider-mnt && ls /run/cdoutsider-mnt && umount /run/cdoutsider-mnt'",
				ns, v, headAddr, export))
			t.Logf("NFSv%s mount from %s (exit %d): %s", v, b.addr, code, out)
			if code == 0 || !strings.Contains(out, "access denied") {
				t.Errorf("mounting %s:%s with NFSv%s from %s, a machine that did not boot from node1: exit %d, want access denied:\n%s", headAddr, export, v, b.addr, code, out)
			}
		}
	}
	// The control: the node itself, whose address node1 exports to, in a
	// mount namespace of its own so that nothing stays mounted.
	out, code := node.Try(t, ctx, fmt.Sprintf("mkdir -p /run/cdcontrol-mnt && unshare -m sh -c 'mount -t nfs -o vers=3,proto=tcp,retry=0 %s:%s /run/cdcontrol-mnt && ls /run/cdcontrol-mnt'",
		headAddr, export))
	t.Logf("mount from the node itself (exit %d), its listing: %s", code, strings.Join(strings.Fields(out), " "))
	if code != 0 || !slices.ContainsFunc(strings.Fields(out), func(f string) bool { return f == "etc" || f == "user" }) {
		t.Errorf("mounting %s:%s from the booted node (the control): exit %d:\n%s", headAddr, export, code, out)
	}
}
