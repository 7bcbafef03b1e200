package clusterfiles

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

var subnet = netip.MustParsePrefix("10.99.0.0/24")

func node(name, ip, role, state string, cores int) registry.Node {
	return registry.Node{Name: name, IP: ip, Role: role, State: state, Cores: cores, MAC: "52:54:00:00:00:01"}
}

// testNodes: the head, two live nodes and a down one, deliberately out of
// order, and one off the cluster subnet.
func testNodes() []registry.Node {
	return []registry.Node{
		node("node12", "10.99.0.12", registry.RoleNode, registry.StateUp, 8),
		node("node3", "10.99.0.3", registry.RoleNode, registry.StateUp, 2),
		node("node1", "10.99.0.1", registry.RoleHead, registry.StateUp, 4),
		node("node7", "10.99.0.7", registry.RoleNode, registry.StateDown, 4),
		node("node9", "192.168.1.9", registry.RoleNode, registry.StateUp, 4),
	}
}

func read(t *testing.T, root, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func withoutComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestWrite(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	userHosts := "127.0.0.1\tlocalhost\n10.99.0.1\tnode1\n192.168.1.50 printer # the lab's\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	os.WriteFile(filepath.Join(root, HostsPath), []byte(userHosts), 0o644)

	if err := Write(root, testNodes(), subnet); err != nil {
		t.Fatal(err)
	}
	hosts := read(t, root, HostsPath)
	wantBlock := "10.99.0.1\tnode1 node1.cluster\n" +
		"10.99.0.3\tnode3 node3.cluster\n" +
		"10.99.0.7\tnode7 node7.cluster\n" +
		"10.99.0.12\tnode12 node12.cluster\n" +
		endMarker + "\n"
	if !strings.HasPrefix(hosts, beginMarker) || !strings.Contains(hosts, wantBlock) || !strings.HasSuffix(hosts, endMarker+"\n"+userHosts) {
		t.Errorf("/etc/hosts:\n%s", hosts)
	}
	if strings.Contains(hosts, "192.168.1.9") {
		t.Errorf("/etc/hosts lists a node off the cluster subnet:\n%s", hosts)
	}

	mpi := read(t, root, MPIHostsPath)
	if got, want := withoutComments(mpi), "node1 slots=4\nnode3 slots=2\nnode12 slots=8"; got != want {
		t.Errorf("mpi.hosts:\n%s\nwant (head first, up nodes only):\n%s", got, want)
	}
	if def := read(t, root, PRRTEDefaultPath); def != mpi {
		t.Errorf("Open MPI 5's (PRRTE's) default hostfile differs from mpi.hosts:\n%s", def)
	}
	if def := read(t, root, OpenMPIDefaultPath); def != mpi {
		t.Errorf("Open MPI default hostfile differs from mpi.hosts:\n%s", def)
	}
	if got, want := withoutComments(read(t, root, PVMHostsPath)), "node1\nnode3\nnode12"; got != want {
		t.Errorf("pvm.hosts:\n%s\nwant:\n%s", got, want)
	}
	for _, p := range []string{HostsPath, MPIHostsPath, PVMHostsPath, OpenMPIDefaultPath} {
		fi, _ := os.Stat(filepath.Join(root, p))
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v", p, fi.Mode().Perm())
		}
	}

	// Next round: node3 leaves, node7 comes back; the block is replaced,
	// not added, and the lines outside it stay.
	ns := testNodes()
	ns = append(ns[:1], ns[2:]...)
	ns[2].State = registry.StateUp
	if err := Write(root, ns, subnet); err != nil {
		t.Fatal(err)
	}
	hosts = read(t, root, HostsPath)
	if strings.Count(hosts, beginMarker) != 1 || strings.Contains(hosts, "node3") || !strings.Contains(hosts, "node7 node7.cluster") || !strings.HasSuffix(hosts, endMarker+"\n"+userHosts) {
		t.Errorf("/etc/hosts after a change:\n%s", hosts)
	}
	if got, want := withoutComments(read(t, root, MPIHostsPath)), "node1 slots=4\nnode7 slots=4\nnode12 slots=8"; got != want {
		t.Errorf("mpi.hosts after a change:\n%s", got)
	}
}

func TestHostsBlockInPlace(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	before := "127.0.0.1 localhost\n"
	after := "# my notes\n10.0.0.1 gw\n"
	old := before + beginMarker + "\n10.99.0.99 node99 node99.cluster\n" + endMarker + "\n" + after
	os.WriteFile(filepath.Join(root, HostsPath), []byte(old), 0o644)
	if err := Write(root, testNodes(), subnet); err != nil {
		t.Fatal(err)
	}
	hosts := read(t, root, HostsPath)
	if !strings.HasPrefix(hosts, before+beginMarker) || !strings.HasSuffix(hosts, endMarker+"\n"+after) || strings.Contains(hosts, "node99") {
		t.Errorf("/etc/hosts with an existing block:\n%s", hosts)
	}
	// No /etc/hosts at all: one is made, with localhost.
	root2 := t.TempDir()
	if err := Write(root2, nil, subnet); err != nil {
		t.Fatal(err)
	}
	if h := read(t, root2, HostsPath); !strings.Contains(h, "127.0.0.1\tlocalhost") {
		t.Errorf("new /etc/hosts:\n%s", h)
	}
}

func inode(t *testing.T, path string) (uint64, int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Ino, fi.ModTime().UnixNano()
}

func TestUnchangedNotRewritten(t *testing.T) {
	root := t.TempDir()
	if err := Write(root, testNodes(), subnet); err != nil {
		t.Fatal(err)
	}
	paths := []string{HostsPath, MPIHostsPath, PVMHostsPath, OpenMPIDefaultPath}
	type stamp struct {
		ino   uint64
		mtime int64
	}
	before := map[string]stamp{}
	for _, p := range paths {
		i, m := inode(t, filepath.Join(root, p))
		before[p] = stamp{i, m}
	}
	// Same membership, different stats (what heartbeats change).
	ns := testNodes()
	ns[0].Load1, ns[0].MemUsedKiB = 3.5, 1234
	if err := Write(root, ns, subnet); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		i, m := inode(t, filepath.Join(root, p))
		if (stamp{i, m}) != before[p] {
			t.Errorf("%s rewritten although unchanged", p)
		}
	}
	// A change rewrites (a new inode: replaced by rename, not in place).
	ns[1].State = registry.StateDown
	if err := Write(root, ns, subnet); err != nil {
		t.Fatal(err)
	}
	if i, _ := inode(t, filepath.Join(root, MPIHostsPath)); i == before[MPIHostsPath].ino {
		t.Error("mpi.hosts changed in place, not replaced")
	}
	if i, _ := inode(t, filepath.Join(root, HostsPath)); i != before[HostsPath].ino {
		t.Error("/etc/hosts rewritten though node3 is still known (only down)")
	}
	entries, _ := os.ReadDir(filepath.Join(root, "etc", "cluster"))
	if len(entries) != 2 {
		t.Errorf("etc/cluster holds %d entries, want 2 (no temporary files left)", len(entries))
	}
}

func TestHomeLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a home to another user")
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "root"), 0o700)
	alice := filepath.Join(root, "home", "alice")
	os.MkdirAll(alice, 0o755)
	if err := os.Chown(alice, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	bob := filepath.Join(root, "home", "bob")
	os.MkdirAll(bob, 0o755)
	os.Chown(bob, 1001, 1001)
	// bob keeps his own mpi.hosts.
	os.WriteFile(filepath.Join(bob, MPIHostsLink), []byte("localhost slots=2\n"), 0o644)
	os.WriteFile(filepath.Join(root, "home", "stray-file"), nil, 0o644)

	if err := Write(root, testNodes(), subnet); err != nil {
		t.Fatal(err)
	}
	for home, uid := range map[string]int{filepath.Join(root, "root"): 0, alice: 1000} {
		for link, target := range map[string]string{MPIHostsLink: "/etc/cluster/mpi.hosts", PVMHostsLink: "/etc/cluster/pvm.hosts"} {
			p := filepath.Join(home, link)
			got, err := os.Readlink(p)
			if err != nil || got != target {
				t.Errorf("%s -> %q (%v), want %s", p, got, err, target)
				continue
			}
			fi, _ := os.Lstat(p)
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || int(st.Gid) != uid {
				t.Errorf("%s owned by %d:%d, want %d", p, st.Uid, st.Gid, uid)
			}
		}
	}
	if data, _ := os.ReadFile(filepath.Join(bob, MPIHostsLink)); string(data) != "localhost slots=2\n" {
		t.Errorf("bob's own mpi.hosts replaced: %q", data)
	}
	if _, err := os.Readlink(filepath.Join(bob, PVMHostsLink)); err != nil {
		t.Errorf("bob got no pvm.hosts link: %v", err)
	}
	// Idempotent.
	if err := Write(root, testNodes(), subnet); err != nil {
		t.Errorf("second Write: %v", err)
	}
}

// debianMCAParams is the end of trixie's /etc/openmpi/openmpi-mca-params.conf
// (openmpi-common 5.0.7-1), which has no line break after its last line.
const debianMCAParams = "# See \"ompi_info --param all all --level 9\" for a full listing of Open\n" +
	"# MPI MCA parameters available and their default values.\n" +
	"btl_base_warn_component_unused=0\nmtl = ^ofi\nbtl = ^uct,openib,ofi\npml = ^ucx\nosc = ^ucx,pt2pt"

// mcaValues reads an MCA parameter file as Open MPI, PRRTE and PMIx do:
// "name = value" lines, comments skipped, the last setting of a name wins.
func mcaValues(text string) map[string]string {
	v := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if k, val, ok := strings.Cut(l, "="); ok {
			v[strings.TrimSpace(k)] = strings.TrimSpace(val)
		}
	}
	return v
}

// TestMPIParams: the parameter files get the cluster subnet in a block of
// their own; Debian's settings and the user's stay, a user's setting wins,
// and the next boot's subnet replaces the block.
func TestMPIParams(t *testing.T) {
	root := t.TempDir()
	ompi := filepath.Join(root, OpenMPIParamsPath)
	os.MkdirAll(filepath.Dir(ompi), 0o755)
	os.WriteFile(ompi, []byte(debianMCAParams), 0o644)

	lan := netip.MustParsePrefix("192.168.50.0/23")
	if err := WriteSystem(root, testNodes(), lan); err != nil {
		t.Fatal(err)
	}
	text := read(t, root, OpenMPIParamsPath)
	v := mcaValues(text)
	for k, want := range map[string]string{
		"btl_tcp_if_include": "192.168.50.0/23", "oob_tcp_if_include": "192.168.50.0/23",
		"osc": "^ucx,pt2pt", "pml": "^ucx", "btl_base_warn_component_unused": "0",
	} {
		if v[k] != want {
			t.Errorf("%s: %s = %q, want %q:\n%s", OpenMPIParamsPath, k, v[k], want, text)
		}
	}
	if !strings.HasPrefix(text, beginMarker) || !strings.HasSuffix(text, "osc = ^ucx,pt2pt\n") {
		t.Errorf("%s: the block is not first, or Debian's last line was not mended:\n%s", OpenMPIParamsPath, text)
	}
	prte := read(t, root, PRRTEParamsPath)
	if pv := mcaValues(prte); pv["prte_if_include"] != "192.168.50.0/23" || len(pv) != 1 {
		t.Errorf("%s: %q, want prte_if_include only:\n%s", PRRTEParamsPath, pv, prte)
	}

	// The user's own setting, below the block, wins; the next boot's
	// subnet replaces the block and keeps it.
	os.WriteFile(ompi, []byte(text+"btl_tcp_if_include = eth1\n"), 0o644)
	cluster := netip.MustParsePrefix("10.99.0.0/24")
	if err := WriteSystem(root, testNodes(), cluster); err != nil {
		t.Fatal(err)
	}
	text = read(t, root, OpenMPIParamsPath)
	v = mcaValues(text)
	if v["btl_tcp_if_include"] != "eth1" || v["oob_tcp_if_include"] != "10.99.0.0/24" || strings.Count(text, beginMarker) != 1 || strings.Contains(text, "192.168") {
		t.Errorf("%s after the user's setting and a new subnet:\n%s", OpenMPIParamsPath, text)
	}
	if pv := mcaValues(read(t, root, PRRTEParamsPath)); pv["prte_if_include"] != "10.99.0.0/24" {
		t.Errorf("%s after a new subnet: %q", PRRTEParamsPath, pv)
	}
	// Unchanged: not rewritten.
	ino, mtime := inode(t, ompi)
	if err := WriteSystem(root, testNodes(), cluster); err != nil {
		t.Fatal(err)
	}
	if i, m := inode(t, ompi); i != ino || m != mtime {
		t.Errorf("%s rewritten although unchanged", OpenMPIParamsPath)
	}
	// Without a subnet nothing is written.
	bare := t.TempDir()
	if err := WriteSystem(bare, testNodes(), netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bare, PRRTEParamsPath)); err == nil {
		t.Errorf("%s written without a subnet", PRRTEParamsPath)
	}
}

// TestWriteJoining: a joining node (its sshd does not answer yet) has its
// name in /etc/hosts, and no slots in the hostfiles.
func TestWriteJoining(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	nodes := []registry.Node{
		node("node1", "10.99.0.1", registry.RoleHead, registry.StateUp, 4),
		node("node5", "10.99.0.5", registry.RoleNode, registry.StateJoining, 2),
	}
	if err := Write(root, nodes, subnet); err != nil {
		t.Fatal(err)
	}
	if hosts := read(t, root, HostsPath); !strings.Contains(hosts, "10.99.0.5\tnode5 node5.cluster\n") {
		t.Errorf("/etc/hosts has no joining node5:\n%s", hosts)
	}
	if got := withoutComments(read(t, root, MPIHostsPath)); got != "node1 slots=4" {
		t.Errorf("mpi.hosts:\n%s\nwant node1 only: node5's sshd does not answer yet", got)
	}
	if got := read(t, root, PVMHostsPath); strings.Contains(got, "node5") {
		t.Errorf("pvm hosts list the joining node5:\n%s", got)
	}
}
