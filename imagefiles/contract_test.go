//go:build !contractvariant

package imagefiles

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// The initramfs scripts read the kernel command line and name the node in
// POSIX sh: these tests hold them to internal/contract.

// TestNodeScriptNaming runs the node script's naming rule in sh (dash, as in
// the initrd) for addresses on several subnets and heads, and compares each
// name with contract.Naming.
func TestNodeScriptNaming(t *testing.T) {
	sh, err := exec.LookPath("dash")
	if err != nil {
		sh = "/bin/sh"
	}
	cases := []struct{ subnet, head string }{
		{"10.99.0.0/24", "10.99.0.1"},
		{"192.168.50.0/23", "192.168.50.1"},
		{"192.168.50.0/23", "192.168.50.37"},
		{"10.20.0.0/16", "10.20.3.4"},
		{"172.16.0.0/12", "172.31.255.254"},
		{"10.99.0.64/27", "10.99.0.65"},
	}
	for _, c := range cases {
		n := contract.Naming{Subnet: netip.MustParsePrefix(c.subnet), Head: netip.MustParseAddr(c.head)}
		mask := netmask(n.Subnet)
		// The first and last hosts, the head, host number 1, and some in
		// between.
		first := n.Subnet.Addr().Next()
		last := contract.Broadcast(n.Subnet).Prev()
		addrs := []netip.Addr{first, first.Next(), n.Head, last, last.Prev()}
		for a, i := first, 0; i < 600 && a.Compare(last) <= 0; a, i = a.Next(), i+1 {
			if i%37 == 0 {
				addrs = append(addrs, a)
			}
		}
		for _, a := range addrs {
			want, err := n.Name(a)
			if err != nil {
				t.Fatalf("%s head %s: Name(%s): %v", c.subnet, c.head, a, err)
			}
			out, err := exec.Command(sh, "initramfs/clusterdebian-node", "name", a.String(), mask, c.head).CombinedOutput()
			if got := strings.TrimSpace(string(out)); err != nil || got != want {
				t.Errorf("%s head %s: the node script names %s %q (%v); contract.Naming says %s", c.subnet, c.head, a, got, err, want)
			}
		}
	}
}

func netmask(p netip.Prefix) string {
	m := ^uint32(0) << (32 - p.Bits())
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}).String()
}

// TestScriptParameters checks that the scripts read exactly the kernel
// parameters the contract defines, with the values the head writes.
func TestScriptParameters(t *testing.T) {
	known := []string{contract.ParamRole, contract.ParamHead, contract.ParamToken, contract.ParamRoot, contract.ParamLayers, contract.ParamLayerSums}
	param := regexp.MustCompile(`clusterdebian\.[a-z_0-9]+`)
	for name, script := range map[string]string{"clusterdebian-node": NodeInitramfsScript, "live-layers.sh": LiveLayersScript} {
		used := param.FindAllString(script, -1)
		if len(used) == 0 {
			t.Errorf("%s reads no clusterdebian.* parameter", name)
		}
		for _, p := range used {
			if !slices.Contains(known, p) {
				t.Errorf("%s reads %s, which internal/contract does not define", name, p)
			}
		}
	}
	for _, want := range []string{
		contract.ParamRole + "=" + contract.RoleNode,
		contract.ParamRoot + "=" + string(contract.RootRAM),
		"cmdline_value " + contract.ParamHead,
	} {
		if !strings.Contains(NodeInitramfsScript, want) {
			t.Errorf("clusterdebian-node does not read %q", want)
		}
	}
	if !strings.Contains(LiveLayersScript, contract.ParamLayers+"=") {
		t.Errorf("live-layers.sh does not read %s=", contract.ParamLayers)
	}
	// The swarm's names: node1's report route, the no-redirect form of a
	// layer's URL, the list of verified layers the agent serves.
	for _, want := range []string{contract.SwarmReportPath, "?" + contract.SwarmDirectQuery,
		`CD_RUN="${CLUSTERDEBIAN_RUN:-` + contract.RunDir + `}"`, `"${CD_RUN}/` + contract.VerifiedLayersFile + `"`, "result=$2",
		"clusterdebian_param " + contract.ParamLayerSums, "clusterdebian_param " + contract.ParamToken} {
		if !strings.Contains(LiveLayersScript, want) {
			t.Errorf("live-layers.sh lacks %q", want)
		}
	}
	for _, r := range []string{contract.SwarmOK, contract.SwarmBad, contract.SwarmFail} {
		if !strings.Contains(LiveLayersScript, "\" "+r+"\n") {
			t.Errorf("live-layers.sh never reports %q", r)
		}
	}
	// What the head writes, the scripts find: a shared-root and a RAM-root
	// command line carry the strings the scripts match on.
	c := contract.Cmdline{Node: true, Head: netip.MustParseAddr("10.99.0.1"), Token: "t", Root: contract.RootRAM, Layers: []string{contract.CustomLayer}}
	line := " " + c.Format() + " "
	for _, want := range []string{" " + contract.ParamRole + "=" + contract.RoleNode + " ", " " + contract.ParamRoot + "=ram ", " " + contract.ParamLayers + "=" + contract.CustomLayer + " "} {
		if !strings.Contains(line, want) {
			t.Errorf("the head's RAM-root command line %q lacks %q", line, want)
		}
	}
}

// TestIfupdownHook: the ifupdown hook refuses a DHCP client on the
// interface the head named in contract.RunDir/contract.InterfaceFile, and
// only there. It runs with that path moved into a temporary folder.
func TestIfupdownHook(t *testing.T) {
	claim := contract.RunDir + "/" + contract.InterfaceFile
	if !strings.Contains(IfupdownHook, claim) {
		t.Fatalf("the ifupdown hook does not read %s", claim)
	}
	if Mode("etc/network/if-pre-up.d/clusterdebian") != 0o755 {
		t.Error("the ifupdown hook is not executable in the image")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, contract.InterfaceFile)
	script := strings.ReplaceAll(IfupdownHook, claim, file)
	run := func(iface, method string) error {
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = []string{"IFACE=" + iface, "METHOD=" + method, "PHASE=pre-up", "PATH=/usr/bin:/bin"}
		return cmd.Run()
	}
	if err := run("eth0", "dhcp"); err != nil {
		t.Errorf("before the head claimed anything: %v", err)
	}
	if err := os.WriteFile(file, []byte("eth0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		iface, method string
		refused       bool
	}{
		{"eth0", "dhcp", true},
		{"eth0", "static", false},
		{"eth1", "dhcp", false},
		{"eth", "dhcp", false},
	} {
		if err := run(tc.iface, tc.method); (err != nil) != tc.refused {
			t.Errorf("%s %s: %v, want refused %v", tc.iface, tc.method, err, tc.refused)
		}
	}
}
