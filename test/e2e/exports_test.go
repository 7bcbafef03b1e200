//go:build e2e

package e2e

import (
	"context"
	"fmt"
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
// exports path to subnet and nothing to anybody else.
func checkExports(t *testing.T, out, path, subnet string) {
	t.Helper()
	list, err := parseExports(out)
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(list) != 1 || list[0].path != path || list[0].client != subnet {
		t.Errorf("exportfs -s: want %s exported to %s only, got %+v:\n%s", path, subnet, list, out)
	}
}

// Addresses of the outsider that mountFromOutside adds on a node's wire:
// one outside the cluster subnet, and, for the control, one inside it
// that no node has.
const (
	outsiderAddr = "10.98.0.7"
	insiderAddr  = "10.99.0.249"
)

// mountFromOutside checks that a machine on the cluster's wire whose
// address is outside the cluster subnet cannot mount export from node1
// (head), while the same machine with an address inside the subnet can.
//
// The outsider is a network namespace in the guest node, on a macvlan of
// the node's cluster NIC: its own MAC and address on the same wire, its
// own routes, and nothing of the node's own mounts or connections. NFSv3,
// as the shared root uses: v3 mounts hold no client state on node1 that
// the outsider could disturb for the node's own mounts. node1 gets a host
// route back to the outsider's address for the check, so that a refused
// mount is the export's doing, not a network that cannot answer: the
// outsider first shows that it reaches node1's NFS port.
func mountFromOutside(t *testing.T, ctx context.Context, head, node testsupport.Guest, export string) {
	t.Helper()
	const ns = "cdoutsider"
	node.Sh(t, ctx, fmt.Sprintf(`set -e
dev=$(ip -o -4 route get %[1]s | sed -n 's/.* dev \([^ ]*\).*/\1/p')
ip netns add %[2]s
ip link add link "$dev" name out0 type macvlan mode bridge
ip link set out0 netns %[2]s
ip -n %[2]s link set lo up
ip -n %[2]s link set out0 up
mkdir -p /run/cdoutsider-mnt`, clusterHead, ns))
	t.Cleanup(func() { node.Try(t, context.Background(), "ip netns del "+ns) })

	// mount tries to mount export from inside the namespace, lists what
	// it mounted and lets go of it; ip netns exec gives the command a
	// mount namespace of its own, so nothing stays mounted on the node.
	mount := func(addr string) (string, int) {
		t.Helper()
		node.Sh(t, ctx, fmt.Sprintf("ip -n %[1]s addr flush dev out0 && ip -n %[1]s addr add %[2]s/24 dev out0 && ip -n %[1]s route replace %[3]s/32 dev out0",
			ns, addr, clusterHead))
		// The outsider reaches node1's NFS server: a refusal below is
		// the export's answer.
		node.Sh(t, ctx, fmt.Sprintf("ip netns exec %s timeout 60 bash -c 'exec 3<>/dev/tcp/%s/2049'", ns, clusterHead))
		return node.Try(t, ctx, fmt.Sprintf("ip netns exec %s timeout 120 sh -c 'mount -t nfs -o vers=3,proto=tcp,retry=0 %s:%s /run/cdoutsider-mnt && ls /run/cdoutsider-mnt && umount /run/cdoutsider-mnt'",
			ns, clusterHead, export))
	}

	// node1 answers the outsider's address on its cluster interface.
	head.Sh(t, ctx, fmt.Sprintf("ip route replace %s/32 dev $(ip -o -4 addr show | awk '$4 ~ /^%s\\// {print $2; exit}')",
		outsiderAddr, regexp.QuoteMeta(clusterHead)))
	t.Cleanup(func() { head.Try(t, context.Background(), "ip route del "+outsiderAddr+"/32") })

	out, code := mount(outsiderAddr)
	t.Logf("mount from %s (exit %d): %s", outsiderAddr, code, out)
	if code == 0 || !strings.Contains(out, "access denied") {
		t.Errorf("mounting %s:%s from %s, outside the cluster subnet: exit %d, want access denied:\n%s", clusterHead, export, outsiderAddr, code, out)
	}
	// The control: the same outsider, with an address of the subnet.
	out, code = mount(insiderAddr)
	t.Logf("mount from %s (exit %d), its listing: %s", insiderAddr, code, strings.Join(strings.Fields(out), " "))
	if code != 0 || !slices.ContainsFunc(strings.Fields(out), func(f string) bool { return f == "etc" || f == "user" }) {
		t.Errorf("mounting %s:%s from %s, inside the cluster subnet (the control): exit %d:\n%s", clusterHead, export, insiderAddr, code, out)
	}
}
