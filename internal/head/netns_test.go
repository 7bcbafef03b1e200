package head

// TestHeadInNetns starts a whole head in-process (New and Serve) in a network
// namespace of its own, with a fake for the machine (fakeSystem), and boots a
// pretend node against it with real clients from a second namespace: busybox
// udhcpc for DHCP, tftp-hpa for TFTP, curl for HTTP and the node API.
//
// A Go process cannot move all its threads into a namespace, and the head
// runs its servers on goroutines that may run on any thread; so the test
// runs itself again, as a child process started inside the head's namespace
// by `ip netns exec`, and that child is where the head and the checks run.
//
// It also holds the head to the rules that keep bystanders on a shared LAN
// out: the state folder must be a file system of its own inside an exported
// root (the child mounts a tmpfs there, in the mount namespace that `ip
// netns exec` gave it); a machine that did not do DHCP with the head, or
// asks from another address, is refused the iPXE script; node1's root is
// exported to the booted node's address only, and no longer once the node
// is pruned.
//
// Every name the test expects starts with wantPrefix, which is written in
// naming_oracle_test.go ("node") and, for a build with -tags
// contractvariant, in contractvariant_test.go ("cd"), not taken from
// internal/contract: so the same test proves that the DHCP host name
// (option 12), the registry, the iPXE script, the SSH certificate and the
// cluster files all follow the contract package's naming rule.
//
// Topology (namespace names start with netns.TestPrefix):
//
//	cdt-hd…  eth0, no address (the head adds 10.99.0.1/24 itself)
//	   │ veth
//	cdt-nd…  eth0, MAC 02:cd:00:00:00:10 (the node)

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

const (
	// childEnv, set to the node's namespace, makes TestHeadInNetns the
	// child that runs the head.
	childEnv = "CLUSTERDEBIAN_TEST_HEAD_NETNS_NODE"
	nodeMAC  = "02:cd:00:00:00:10"
	// guard bounds every wait and command; no check depends on timing.
	guard = 60 * time.Second
)

// The cluster network of the test, written out here rather than taken from
// the head, which is what the test checks; bystander is an address on the
// segment that did no DHCP with the head.
var (
	nsSubnet  = netip.MustParsePrefix("10.99.0.0/24")
	nsHead    = "10.99.0.1"
	bystander = "10.99.0.200"
)

// Stand-ins for the boot files: what the head serves must be exactly these.
var standIns = map[string]string{
	"boot/vmlinuz":             "stand-in kernel\n",
	"boot/initrd.img":          "stand-in live initrd\n",
	"boot/initrd-nfs.img":      "stand-in NFS initrd\n",
	"state/tftp/undionly.kpxe": "stand-in iPXE loader for BIOS PXE\n",
	"boot/shimx64.efi":         "stand-in shim, signed by Microsoft\n",
	"boot/grubx64.efi":         "stand-in GRUB network image, signed by Debian\n",
}

func TestHeadInNetns(t *testing.T) {
	if node := os.Getenv(childEnv); node != "" {
		headChild(t, node)
		return
	}
	if err := netns.Check(); err != nil {
		t.Skipf("the in-process head test needs network namespaces: %v", err)
	}
	for _, tool := range []string{"tftp", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the in-process head test needs %s (clusterdebian doctor --fix installs it)", tool)
		}
	}
	if udhcpc() == nil {
		t.Skip("the in-process head test needs udhcpc (Debian: udhcpc or busybox; clusterdebian doctor --fix installs it)")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*guard)
	defer cancel()
	newNS := func(prefix string) *netns.NS {
		ns, err := netns.New(ctx, netns.UniqueName(netns.TestPrefix+prefix))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ns.Delete(context.Background()); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		return ns
	}
	headNS, nodeNS := newNS("hd"), newNS("nd")
	if err := netns.AddVeth(ctx, headNS, "eth0", nodeNS, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := nodeNS.IP(ctx, "link", "set", "eth0", "address", nodeMAC); err != nil {
		t.Fatal(err)
	}

	cmd := headNS.Command(ctx, os.Args[0], "-test.run=^TestHeadInNetns$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+nodeNS.Name)
	out, err := cmd.CombinedOutput()
	t.Logf("the head's process in namespace %s:\n%s", headNS.Name, out)
	if err != nil {
		t.Fatalf("the head's process failed: %v", err)
	}
	// Exit status 0 with the test skipped or not run would prove nothing.
	if !bytes.Contains(out, []byte("--- PASS: TestHeadInNetns")) {
		t.Fatal("the head's process did not run TestHeadInNetns to a pass")
	}
}

// udhcpc returns the command line that runs busybox's udhcpc, or nil.
func udhcpc() []string {
	if p, err := exec.LookPath("udhcpc"); err == nil {
		return []string{p}
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		if out, _ := exec.Command(p, "--list").Output(); bytes.Contains(out, []byte("udhcpc\n")) {
			return []string{p, "udhcpc"}
		}
	}
	return nil
}

// node is the pretend node: commands run in its namespace.
type node struct {
	ns  string
	dir string
}

// run runs a command in the node's namespace and returns its output.
func (n *node) run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns, name}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// dhcp runs udhcpc once and returns what it passed to its script on
// "bound": ip, hostname (option 12), boot_file, siaddr, ...
func (n *node) dhcp(t *testing.T, extra ...string) map[string]string {
	t.Helper()
	out := filepath.Join(n.dir, "udhcpc.env")
	os.Remove(out)
	script := filepath.Join(n.dir, "udhcpc.sh")
	// The script leaves the interface alone, so every run starts afresh.
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncase \"$1\" in bound) env > "+out+" ;; esac\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := udhcpc()
	args := append(cmd[1:], "-i", "eth0", "-f", "-q", "-n", "-t", "10", "-T", "1", "-s", script)
	log, err := n.run(cmd[0], append(args, extra...)...)
	if err != nil {
		t.Fatalf("udhcpc %s: %v", strings.Join(extra, " "), err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("udhcpc %s got no lease: %s", strings.Join(extra, " "), log)
	}
	vars := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = strings.TrimSpace(v)
		}
	}
	return vars
}

// curl fetches url from the node and returns the body; extra goes first.
func (n *node) curl(t *testing.T, url string, extra ...string) string {
	t.Helper()
	out, err := n.run("curl", append(append([]string{"-sS", "-f", "--max-time", "30"}, extra...), url)...)
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	return string(out)
}

// headChild is TestHeadInNetns inside the head's namespace.
func headChild(t *testing.T, nodeNS string) {
	dir := t.TempDir()
	ipxe := filepath.Join(dir, "ipxe")
	must(t, os.Mkdir(ipxe, 0o755))
	// The cluster root of an installed machine: its own SSH host key,
	// which the head certifies, then has sshd reload.
	root := filepath.Join(dir, "root")
	hostKey, err := sshtrust.NewHostKey(filepath.Join(root, "etc/ssh"))
	must(t, err)
	// The state folder where node1 has it, inside the root it exports.
	stateDir := filepath.Join(root, "var/lib/clusterdebian")
	must(t, os.MkdirAll(stateDir, 0o700))

	sys := newFakeSystem(root)
	sys.network = HostSystem() // inside this namespace, which the test owns
	sys.physical = map[string]bool{"eth0": true}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := Options{
		Subnet:      nsSubnet,
		DHCP:        dhcp.ModeServer,
		BootDir:     filepath.Join(dir, "boot"),
		StateDir:    stateDir,
		IPXEDir:     ipxe,
		ClusterRoot: root,
		Logger:      slog.New(slog.NewTextHandler(&testLog{t: t}, nil)),
		System:      sys,
	}
	for rel, content := range standIns {
		if strings.HasPrefix(rel, "state/") {
			continue // written once the state folder's tmpfs is there
		}
		p := filepath.Join(dir, filepath.FromSlash(rel))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(content), 0o644))
	}

	// On the exported file system the state folder is refused, before the
	// head touches anything; on a tmpfs of its own (the live image's
	// var-lib-clusterdebian.mount) it is accepted.
	_, err = New(ctx, opts)
	if oe := (*inputerr.Error)(nil); !errors.As(err, &oe) || oe.Input != InputStateDir {
		t.Fatalf("New with the state folder on the exported root: %v, want an input error about StateDir", err)
	}
	if len(sys.calls()) != 0 {
		t.Fatalf("the refused head touched the machine: %q", sys.calls())
	}
	unmount := mountStateTmpfs(t, stateDir)
	defer unmount()
	for rel, content := range standIns {
		if after, ok := strings.CutPrefix(rel, "state/"); ok {
			p := filepath.Join(stateDir, filepath.FromSlash(after))
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			must(t, os.WriteFile(p, []byte(content), 0o644))
		}
	}
	h, err := New(ctx, opts)
	must(t, err)
	served := make(chan error, 1)
	go func() { served <- h.Serve(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(guard):
			t.Error("Serve did not return after its context ended")
		}
	}
	defer stop()
	waitUDP(t, 67, served)

	if h.Interface() != "eth0" || h.Addr().String() != nsHead {
		t.Errorf("head on %s at %v, want eth0 (the only \"physical\" NIC) at %s", h.Interface(), h.Addr(), nsHead)
	}
	tokenBytes, err := os.ReadFile(filepath.Join(stateDir, "token"))
	must(t, err)
	token := strings.TrimSpace(string(tokenBytes))
	n := &node{ns: nodeNS, dir: t.TempDir()}

	var ip netip.Addr
	var name string
	t.Run("dhcp", func(t *testing.T) {
		vars := n.dhcp(t)
		var err error
		ip, err = netip.ParseAddr(vars["ip"])
		if err != nil || !nsSubnet.Contains(ip) || ip.String() == nsHead {
			t.Fatalf("udhcpc lease %q, want an address of %v", vars["ip"], nsSubnet)
		}
		// On a /24 a node's number is its address's last byte.
		name = wantPrefix + strconv.Itoa(int(ip.As4()[3]))
		for k, want := range map[string]string{"hostname": name, "domain": "cluster", "serverid": nsHead, "boot_file": ""} {
			if vars[k] != want {
				t.Errorf("plain DHCP client: %s = %q, want %q", k, vars[k], want)
			}
		}
		// The same machine as a BIOS PXE ROM, then as iPXE.
		vars = n.dhcp(t, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-O", "66", "-O", "67")
		if vars["ip"] != ip.String() || vars["hostname"] != name || vars["boot_file"] != "undionly.kpxe" || vars["siaddr"] != nsHead {
			t.Errorf("PXE ROM: ip %q hostname %q boot_file %q siaddr %q; want %v %s undionly.kpxe %s",
				vars["ip"], vars["hostname"], vars["boot_file"], vars["siaddr"], ip, name, nsHead)
		}
		// As UEFI PXE firmware: the Secure Boot chain's first stage, shim.
		vars = n.dhcp(t, "-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007", "-O", "66", "-O", "67")
		if vars["boot_file"] != "shimx64.efi" || vars["siaddr"] != nsHead {
			t.Errorf("UEFI PXE firmware: boot_file %q siaddr %q; want shimx64.efi %s", vars["boot_file"], vars["siaddr"], nsHead)
		}
		vars = n.dhcp(t, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-x", "0x4d:69505845")
		if want := "http://" + nsHead + "/boot/" + nodeMAC + ".ipxe"; vars["boot_file"] != want {
			t.Errorf("iPXE: boot_file %q, want %q", vars["boot_file"], want)
		}
	})
	if !ip.IsValid() {
		t.FailNow()
	}
	if _, err := n.run("ip", "addr", "add", ip.String()+"/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}

	t.Run("tftp", func(t *testing.T) {
		// iPXE from the state folder's TFTP root; shim and GRUB from the
		// boot folder; GRUB's configuration, which the head wrote.
		for name, want := range map[string]string{
			"undionly.kpxe": standIns["state/tftp/undionly.kpxe"],
			"shimx64.efi":   standIns["boot/shimx64.efi"],
			"grubx64.efi":   standIns["boot/grubx64.efi"],
			"grub/grub.cfg": GRUBNetConfig(h.Cmdline()),
		} {
			got := filepath.Join(n.dir, filepath.Base(name))
			out, err := n.run("tftp", "-l", "-m", "binary", nsHead, "-c", "get", name, got)
			data, rerr := os.ReadFile(got)
			if err != nil || rerr != nil || string(data) != want {
				t.Errorf("tftp get %s: %q, %v, %v (%s)", name, data, err, rerr, out)
			}
		}
		if !strings.Contains(GRUBNetConfig(h.Cmdline()), "(http,"+nsHead+")/boot/${net_default_mac}.grub") {
			t.Errorf("GRUB's configuration does not send it to this head's GRUB scripts:\n%s", GRUBNetConfig(h.Cmdline()))
		}
		// The server records a read once the client's last ACK is in,
		// which may be just after tftp has exited.
		var stages []string
		loaded := func() bool {
			stages = stages[:0]
			for _, nd := range h.Tracker().Nodes() {
				for _, e := range nd.History {
					stages = append(stages, e.Stage+" "+e.Detail)
				}
			}
			return slices.Contains(stages, "grub-loaded tftp grubx64.efi") && slices.Contains(stages, "ipxe-loaded tftp undionly.kpxe")
		}
		if !eventually(loaded) {
			t.Errorf("boot stages after the TFTP reads: %q, want iPXE and GRUB loaded", stages)
		}
	})

	t.Run("bystanders", func(t *testing.T) {
		// A MAC that never did DHCP with the head, and the node's own MAC
		// asked for from another address of the segment.
		if _, err := n.run("ip", "addr", "add", bystander+"/24", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ what, mac, from string }{
			{"a machine that did no DHCP with the head", "02:cd:00:00:00:99", ip.String()},
			{"the node's script asked for from another address", nodeMAC, bystander},
		} {
			out, err := n.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--interface", c.from,
				"http://"+nsHead+"/boot/"+c.mac+".ipxe")
			if err != nil || string(out) != "403" {
				t.Errorf("%s: %s, %v; want 403", c.what, out, err)
			}
		}
		if _, err := n.run("ip", "addr", "del", bystander+"/24", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		for _, e := range sys.exportCalls() {
			if got := exportedTo(e); len(got) != 0 {
				t.Errorf("exported to %q before the node got its script", got)
			}
		}
	})

	t.Run("http", func(t *testing.T) {
		script := n.curl(t, "http://"+nsHead+"/boot/"+strings.ToUpper(nodeMAC)+".ipxe")
		lines := strings.Split(script, "\n")
		if len(lines) < 5 || lines[0] != "#!ipxe" {
			t.Fatalf("iPXE script:\n%s", script)
		}
		if want := "echo ClusterDebian: booting " + name + " (" + nodeMAC + ") from head " + nsHead; lines[1] != want {
			t.Errorf("script line 2 %q, want %q", lines[1], want)
		}
		kernel := strings.Fields(lines[2])
		for _, want := range []string{"http://" + nsHead + "/netboot/vmlinuz", "initrd=initrd-nfs.img", "clusterdebian.role=node",
			"clusterdebian.head=" + nsHead, "clusterdebian.token=" + token, "clusterdebian.root=shared", "nfsroot=" + nsHead + ":/,vers=3,tcp,timeo=600,retrans=2",
			"BOOTIF=01-" + strings.ReplaceAll(nodeMAC, ":", "-")} {
			if !slices.Contains(kernel, want) {
				t.Errorf("kernel line %q lacks %q", lines[2], want)
			}
		}
		if want := "initrd http://" + nsHead + "/netboot/initrd-nfs.img"; lines[3] != want {
			t.Errorf("script line 4 %q, want %q", lines[3], want)
		}
		// The Secure Boot chain's GRUB script: the same command line.
		grub := n.curl(t, "http://"+nsHead+"/boot/"+nodeMAC+".grub")
		for _, want := range []string{"linux (http," + nsHead + ")/netboot/vmlinuz ", "'clusterdebian.token=" + token + "'",
			"'BOOTIF=01-" + strings.ReplaceAll(nodeMAC, ":", "-") + "'", "initrd (http," + nsHead + ")/netboot/initrd-nfs.img\n"} {
			if !strings.Contains(grub, want) {
				t.Errorf("GRUB script lacks %q:\n%s", want, grub)
			}
		}
		for url, want := range map[string]string{
			"/netboot/vmlinuz":        standIns["boot/vmlinuz"],
			"/netboot/initrd-nfs.img": standIns["boot/initrd-nfs.img"],
		} {
			if got := n.curl(t, "http://"+nsHead+url); got != want {
				t.Errorf("GET %s: %q, want %q", url, got, want)
			}
		}
		// http://node1/ in a browser: the status page.
		if page := n.curl(t, "http://"+nsHead+"/"); !strings.Contains(page, `<table id="nodes">`) {
			t.Errorf("GET /: %.200q, want the status page", page)
		}
	})

	t.Run("register", func(t *testing.T) {
		body := fmt.Sprintf(`{"mac":%q,"ip":%q,"cores":4,"mem_total_kib":1048576}`, strings.ToUpper(nodeMAC), ip)
		url := "http://" + nsHead + "/api/v1/nodes/register"
		if out, err := n.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data", body, url); err != nil || string(out) != "401" {
			t.Errorf("registering without the token: %s, %v; want 401", out, err)
		}
		// With the token, but not as root (an ordinary source port): any
		// user on a node can read the token in /proc/cmdline.
		if out, err := n.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer "+token, "--data", body, url); err != nil || string(out) != "403" {
			t.Errorf("registering from an ordinary port: %s, %v; want 403", out, err)
		}
		var resp struct {
			Name string `json:"name"`
		}
		// As root does: from a privileged port.
		out := n.curl(t, url, "--local-port", "600-1000", "-X", "POST", "-H", "Authorization: Bearer "+token, "--data", body)
		if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Name != name {
			t.Fatalf("register: %q (%v), want the name %s", out, err, name)
		}
		var nodes []struct{ Name, MAC, IP, Role string }
		if err := json.Unmarshal([]byte(n.curl(t, "http://"+nsHead+"/api/v1/nodes")), &nodes); err != nil {
			t.Fatal(err)
		}
		want := []string{wantPrefix + "1 " + nsHead + " head", name + " " + ip.String() + " node " + nodeMAC}
		var got []string
		for _, nd := range nodes {
			s := nd.Name + " " + nd.IP + " " + nd.Role
			if nd.Role == "node" {
				s += " " + nd.MAC
			}
			got = append(got, s)
		}
		if !slices.Equal(got, want) {
			t.Errorf("registry lists %q, want %q", got, want)
		}
	})

	t.Run("cluster files", func(t *testing.T) {
		hosts := filepath.Join(root, "etc/hosts")
		mpi := filepath.Join(root, "etc/cluster/mpi.hosts")
		wantHosts := []string{nsHead + "\t" + wantPrefix + "1 " + wantPrefix + "1.cluster", ip.String() + "\t" + name + " " + name + ".cluster"}
		wantMPI := name + " slots=4"
		// The head writes them in the background after a registration.
		waitFor(t, "the cluster files to list "+name, func() bool {
			h, _ := os.ReadFile(hosts)
			m, _ := os.ReadFile(mpi)
			return strings.Contains(string(h), wantHosts[1]) && strings.Contains(string(m), wantMPI)
		})
		for path, wants := range map[string][]string{hosts: wantHosts, mpi: {wantMPI}} {
			data, err := os.ReadFile(path)
			must(t, err)
			for _, w := range wants {
				if !strings.Contains(string(data), w+"\n") {
					t.Errorf("%s lacks %q:\n%s", path, w, data)
				}
			}
			if wantPrefix != "node" && regexp.MustCompile(`\bnode[0-9]`).Match(data) {
				t.Errorf("%s still names a node<N>:\n%s", path, data)
			}
		}
		// ssh and MPI keep to this boot's cluster network.
		for rel, want := range map[string]string{
			"etc/ssh/ssh_config.d/clusterdebian.conf": "\nHost " + namePattern() + " *.cluster 10.99.0.*\n",
			"etc/openmpi/openmpi-mca-params.conf":     "\nbtl_tcp_if_include = 10.99.0.0/24\noob_tcp_if_include = 10.99.0.0/24\n",
			"etc/openmpi/prte-mca-params.conf":        "\nprte_if_include = 10.99.0.0/24\n",
		} {
			data, err := os.ReadFile(filepath.Join(root, rel))
			if err != nil || !strings.Contains(string(data), want) {
				t.Errorf("%s lacks %q (%v):\n%s", rel, want, err, data)
			}
		}
	})

	t.Run("boot stages", func(t *testing.T) {
		want := []string{"dhcp-acked", "ipxe-loaded", "script-fetched", "kernel-fetched", "initrd-fetched", "registered"}
		// The TFTP read and the registration are recorded after the client
		// is answered.
		var got, missing []string
		if !eventually(func() bool {
			got = stagesOf(t, nodeMAC)
			missing = slices.DeleteFunc(slices.Clone(want), func(w string) bool { return slices.Contains(got, w) })
			return len(missing) == 0
		}) {
			t.Fatalf("boot stages of %s: %q, lacking %q", nodeMAC, got, missing)
		}
	})

	t.Run("machine", func(t *testing.T) {
		calls := sys.calls()
		for _, want := range []string{
			"link up eth0",
			"addr add eth0 " + nsHead + "/24",
			"reload ssh",
		} {
			if !slices.Contains(calls, want) {
				t.Errorf("the head did not ask the machine for %q; it asked %q", want, calls)
			}
		}
		// Nothing at start, then node1's root to the node's address, and
		// to nothing else (not the subnet).
		exports := sys.exportCalls()
		if len(exports) < 2 || len(exportedTo(exports[0])) != 0 || !slices.Equal(exportedTo(exports[len(exports)-1]), []string{"/ " + ip.String()}) ||
			!strings.Contains(exports[len(exports)-1], "/ "+ip.String()+"(rw,no_root_squash,") {
			t.Errorf("exports %q, want none at start, then node1's root to %s only", exports, ip)
		}
		data, err := os.ReadFile(filepath.Join(root, InstalledHostCert))
		must(t, err)
		k, _, _, _, err := ssh.ParseAuthorizedKey(data)
		must(t, err)
		cert, ok := k.(*ssh.Certificate)
		if !ok || string(cert.Key.Marshal()) != string(hostKey.Marshal()) {
			t.Fatalf("%s is not a certificate of the machine's host key", InstalledHostCert)
		}
		for _, p := range []string{wantPrefix + "1", nsHead, fakeHostname} {
			if !slices.Contains(cert.ValidPrincipals, p) {
				t.Errorf("host certificate principals %q lack %q", cert.ValidPrincipals, p)
			}
		}
	})

	t.Run("prune", func(t *testing.T) {
		// The node falls silent (a sweep an hour on), and root prunes it:
		// its export goes with it.
		h.cluster.reg.Sweep(time.Now().Add(time.Hour))
		must(t, h.cluster.reg.Flush())
		var gone []struct{ Name string }
		out := n.curl(t, "http://"+nsHead+"/api/v1/nodes/prune", "-X", "POST", "-H", "Authorization: Bearer "+token)
		if err := json.Unmarshal([]byte(out), &gone); err != nil || len(gone) != 1 || gone[0].Name != name {
			t.Fatalf("prune answered %q (%v), want %s", out, err, name)
		}
		waitFor(t, "the export to "+ip.String()+" to go", func() bool {
			e := sys.exportCalls()
			return len(exportedTo(e[len(e)-1])) == 0
		})
		out = n.curl(t, "http://"+nsHead+"/boot/"+nodeMAC+".ipxe") // it boots again: exported again
		if !strings.Contains(out, "booting "+name) {
			t.Errorf("script after the prune:\n%s", out)
		}
		if e := sys.exportCalls(); !slices.Equal(exportedTo(e[len(e)-1]), []string{"/ " + ip.String()}) {
			t.Errorf("exports after booting again: %q", e[len(e)-1])
		}
	})

	stop()
	t.Run("state", func(t *testing.T) {
		for file, want := range map[string]string{
			"nodes.json":  `"version"`,
			"leases.json": name,
			"booted.json": `"ip": "` + ip.String() + `"`,
		} {
			data, err := os.ReadFile(filepath.Join(stateDir, file))
			if err != nil || !strings.Contains(string(data), want) {
				t.Errorf("state file %s lacks %q: %v\n%s", file, want, err, data)
			}
		}
	})
}

// stagesOf returns the boot stages the head recorded for mac, from its API.
func stagesOf(t *testing.T, mac string) []string {
	t.Helper()
	resp, err := http.Get("http://" + nsHead + "/api/v1/boot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var nodes []struct {
		MAC     string
		History []struct{ Stage string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&nodes); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range nodes {
		if n.MAC == mac {
			for _, e := range n.History {
				out = append(out, e.Stage)
			}
		}
	}
	return out
}

// waitUDP waits until something listens on UDP port in this process's
// namespace; a result on served (put back for the caller) ends the wait
// when the head gave up.
func waitUDP(t *testing.T, port int, served chan error) {
	t.Helper()
	want := fmt.Sprintf(":%04X ", port)
	deadline := time.Now().Add(guard)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile("/proc/net/udp")
		for _, line := range strings.Split(string(data), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[1]+" ", want) {
				return
			}
		}
		select {
		case err := <-served:
			served <- err
			t.Fatalf("the head stopped before serving DHCP: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("nothing listens on UDP port %d", port)
}

// waitFor polls cond until it holds, failing the test after guard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !eventually(cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// eventually polls cond every 50 ms until it holds or guard has passed,
// and reports whether it held; callers whose failure message needs what
// cond last saw keep that in cond's closure.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(guard); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testLog sends the head's log lines to the test's log.
type testLog struct {
	mu sync.Mutex
	t  *testing.T
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = (*testLog)(nil)

// namePattern is the ssh pattern of every node name: wantPrefix and a star.
func namePattern() string { return wantPrefix + "*" }

// mountStateTmpfs mounts a tmpfs on dir, as the live image's
// var-lib-clusterdebian.mount does, and returns its unmount. It refuses
// when the mount would propagate out of the test's mount namespace: `ip
// netns exec` gives the child one whose mounts are slaves of the host's.
func mountStateTmpfs(t *testing.T, dir string) func() {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	best, fields := "", ""
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		mp := f[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, fields = mp, strings.Join(f[6:slices.Index(f, "-")], " ")
		}
	}
	if strings.Contains(fields, "shared:") {
		t.Fatalf("the mount holding %s (%s) propagates to the host (%s); not mounting there", dir, best, fields)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		t.Fatalf("tmpfs on the state folder: %v", err)
	}
	return func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	}
}
