//go:build !contractvariant

package contract

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func naming(subnet, head string) Naming {
	return Naming{Subnet: netip.MustParsePrefix(subnet), Head: netip.MustParseAddr(head)}
}

func TestNameOnSlash24(t *testing.T) {
	n := naming("10.99.0.0/24", "10.99.0.1")
	for addr, want := range map[string]string{
		"10.99.0.1": "node1", "10.99.0.2": "node2", "10.99.0.37": "node37", "10.99.0.254": "node254",
	} {
		got, err := n.Name(netip.MustParseAddr(addr))
		if err != nil || got != want {
			t.Errorf("Name(%s) = %q, %v; want %s", addr, got, err, want)
		}
		back, err := n.Addr(want)
		if err != nil || back.String() != addr {
			t.Errorf("Addr(%s) = %v, %v; want %s", want, back, err, addr)
		}
	}
	for _, bad := range []string{"10.99.0.0", "10.99.0.255", "10.99.1.5", "192.168.1.2"} {
		if got, err := n.Name(netip.MustParseAddr(bad)); err == nil {
			t.Errorf("Name(%s) = %q, want an error", bad, got)
		}
	}
}

func TestNameOnWiderSubnets(t *testing.T) {
	cases := []struct {
		subnet, head, addr, want string
	}{
		// A /23: the second half continues the count, so names stay unique.
		{"192.168.50.0/23", "192.168.50.1", "192.168.51.7", "node263"},
		{"192.168.50.0/23", "192.168.50.1", "192.168.50.7", "node7"},
		{"192.168.50.0/23", "192.168.50.1", "192.168.51.0", "node256"},
		{"192.168.50.0/23", "192.168.50.1", "192.168.50.255", "node255"},
		// A head that is not .1 (its address came from the LAN's DHCP
		// server): it is node1, and the machine at .1 takes its number.
		{"192.168.50.0/23", "192.168.50.37", "192.168.50.37", "node1"},
		{"192.168.50.0/23", "192.168.50.37", "192.168.50.1", "node37"},
		{"192.168.50.0/23", "192.168.50.37", "192.168.50.2", "node2"},
		{"10.20.0.0/16", "10.20.3.4", "10.20.1.2", "node258"},
		{"10.20.0.0/16", "10.20.3.4", "10.20.0.1", "node772"},
		{"10.20.0.0/16", "10.20.3.4", "10.20.255.254", "node65534"},
		{"10.20.0.0/22", "10.20.0.1", "10.20.3.254", "node1022"},
	}
	for _, c := range cases {
		n := naming(c.subnet, c.head)
		got, err := n.Name(netip.MustParseAddr(c.addr))
		if err != nil || got != c.want {
			t.Errorf("%s head %s: Name(%s) = %q, %v; want %s", c.subnet, c.head, c.addr, got, err, c.want)
			continue
		}
		back, err := n.Addr(got)
		if err != nil || back.String() != c.addr {
			t.Errorf("%s head %s: Addr(%s) = %v, %v; want %s", c.subnet, c.head, got, back, err, c.addr)
		}
	}
}

// Every address of a /22 gets a distinct name, node1 only for the head,
// and Addr reverses Name.
func TestNamesUnique(t *testing.T) {
	for _, head := range []string{"10.1.0.1", "10.1.2.200", "10.1.3.254"} {
		n := naming("10.1.0.0/22", head)
		seen := map[string]netip.Addr{}
		for a := netip.MustParseAddr("10.1.0.1"); a != netip.MustParseAddr("10.1.3.255"); a = a.Next() {
			name, err := n.Name(a)
			if err != nil {
				t.Fatalf("head %s: Name(%s): %v", head, a, err)
			}
			if other, dup := seen[name]; dup {
				t.Fatalf("head %s: %s and %s are both %s", head, other, a, name)
			}
			seen[name] = a
			if (name == HeadName) != (a.String() == head) {
				t.Errorf("head %s: %s is %s", head, a, name)
			}
			if back, err := n.Addr(name); err != nil || back != a {
				t.Fatalf("head %s: Addr(%s) = %v, %v; want %s", head, name, back, err, a)
			}
		}
		if len(seen) != 1022 {
			t.Errorf("head %s: %d names for 1022 addresses", head, len(seen))
		}
	}
}

func TestAddrRefuses(t *testing.T) {
	n := naming("10.99.0.0/24", "10.99.0.1")
	for _, name := range []string{"", "node", "node0", "node01", "node-3", "nodex", "host3", "node256", "node255", "Node3", "node3 "} {
		if a, err := n.Addr(name); err == nil {
			t.Errorf("Addr(%q) = %v, want an error", name, a)
		} else if name != "node255" && !errors.Is(err, ErrNotNodeName) {
			t.Errorf("Addr(%q): %v does not wrap ErrNotNodeName", name, err)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, bad := range []Naming{
		{},
		naming("10.99.0.0/31", "10.99.0.1"),
		naming("10.0.0.0/7", "10.0.0.1"),
		naming("10.99.0.0/24", "10.99.1.1"),
		naming("10.99.0.0/24", "10.99.0.0"),
		{Subnet: netip.MustParsePrefix("fd00::/64"), Head: netip.MustParseAddr("fd00::1")},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("Check(%v) = nil, want an error", bad)
		}
	}
	if err := naming("10.99.0.0/24", "10.99.0.1").Check(); err != nil {
		t.Error(err)
	}
}

func TestNormalizeMAC(t *testing.T) {
	for in, want := range map[string]string{
		"52:54:00:AB:cd:01": "52:54:00:ab:cd:01",
		"52-54-00-AB-CD-01": "52:54:00:ab:cd:01",
		" 5254.00ab.cd01 ":  "52:54:00:ab:cd:01",
	} {
		if got, err := NormalizeMAC(in); err != nil || got != want {
			t.Errorf("NormalizeMAC(%q) = %q, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "52:54:00:ab:cd", "01:00:5e:00:00:01", "00:00:00:00:00:00:00:e0:00:00:00:00:00:00:00:00:00:00:00:00"} {
		if got, err := NormalizeMAC(bad); err == nil {
			t.Errorf("NormalizeMAC(%q) = %q, want an error", bad, got)
		}
	}
	hw := []byte{0x52, 0x54, 0, 0xAB, 0xCD, 1}
	if got := MACString(hw); got != "52:54:00:ab:cd:01" {
		t.Errorf("MACString = %q", got)
	}
	if got := MACString(hw[:4]); got != "" {
		t.Errorf("MACString of 4 bytes = %q", got)
	}
}

func TestCmdlineRoundTrip(t *testing.T) {
	cases := []Cmdline{
		{Node: true, Head: netip.MustParseAddr("10.99.0.1"), Token: strings.Repeat("ab", 32), Root: RootShared},
		{Node: true, Head: netip.MustParseAddr("10.99.0.1"), HTTPPort: 8080, Token: "t", Root: RootRAM,
			Layers: []string{"02-custom.ext4", "03-more.squashfs"}, Extra: []string{"quiet", "mitigations=off"}},
		{Node: true, Head: netip.MustParseAddr("192.168.50.37"), Token: "t", Root: RootRAM},
		{Node: true, Head: netip.MustParseAddr("10.99.0.1"), Token: "t", Root: RootShared,
			BootMAC: net.HardwareAddr{0x52, 0x54, 0, 0xab, 0xcd, 0xef}, Extra: []string{"quiet"}},
		{Node: true, Head: netip.MustParseAddr("10.99.0.1"), Token: "t", Root: RootRAM,
			BootMAC: net.HardwareAddr{2, 0xcd, 0, 0, 0, 0x10}},
		{Node: true, Head: netip.MustParseAddr("10.99.0.1"), Token: "t", Root: RootRAM, Layers: []string{CustomLayer},
			LayerSums: map[string]string{BaseLayer: strings.Repeat("0a", 32), CustomLayer: strings.Repeat("b1", 32)}, Swarm: true},
	}
	for _, c := range cases {
		line := c.Format()
		got, err := ParseCmdline(line)
		if err != nil {
			t.Fatalf("ParseCmdline(%q): %v", line, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip of %q:\n got %+v\nwant %+v", line, got, c)
		}
	}
}

func TestCmdlineFormat(t *testing.T) {
	c := Cmdline{Node: true, Head: netip.MustParseAddr("10.99.0.1"), Token: "s3cr3t", Root: RootShared}
	want := "console=ttyS0,115200n8 console=tty0 sysrq_always_enabled clusterdebian.role=node clusterdebian.head=10.99.0.1 clusterdebian.token=s3cr3t " +
		"clusterdebian.root=shared root=/dev/nfs nfsroot=10.99.0.1:/,vers=3,tcp,timeo=600,retrans=2 ip=dhcp rw"
	if got := c.Format(); got != want {
		t.Errorf("Format:\n got %s\nwant %s", got, want)
	}
	c.Root, c.HTTPPort, c.Layers = RootRAM, 8080, []string{CustomLayer}
	if got := c.Format(); !strings.Contains(got, " fetch=http://10.99.0.1:8080/netboot/01-base.squashfs ") ||
		!strings.Contains(got, " clusterdebian.head=10.99.0.1:8080 ") || !strings.HasSuffix(got, " clusterdebian.layers=02-custom.ext4") {
		t.Errorf("RAM root Format: %s", got)
	}
	if s := c.String(); strings.Contains(s, "s3cr3t") {
		t.Errorf("String shows the token: %s", s)
	}
	// The card the node booted from, as pxelinux writes it and the initrds
	// read it: lower-case, dashes, behind the ARP type 01; before any
	// extra parameter.
	c.BootMAC = net.HardwareAddr{0x52, 0x54, 0, 0xAB, 0xCD, 0xEF}
	c.Extra = []string{"quiet"}
	if got := c.Format(); !strings.HasSuffix(got, " ip=dhcp clusterdebian.layers=02-custom.ext4 BOOTIF=01-52-54-00-ab-cd-ef quiet") {
		t.Errorf("Format with BootMAC: %s", got)
	}
	c.BootMAC = net.HardwareAddr{1, 2, 3}
	if got := c.Format(); strings.Contains(got, "BOOTIF") {
		t.Errorf("Format with a 3-byte BootMAC writes BOOTIF: %s", got)
	}
}

func TestBootIF(t *testing.T) {
	hw, err := ParseBootIF("01-52-54-00-AB-cd-ef")
	if err != nil || hw.String() != "52:54:00:ab:cd:ef" {
		t.Errorf("ParseBootIF = %v, %v", hw, err)
	}
	for _, bad := range []string{"52-54-00-ab-cd-ef", "01-52:54:00:ab:cd:ef", "01-52-54-00-ab-cd", "06-52-54-00-ab-cd-ef", "01-01-00-5e-00-00-01", ""} {
		if hw, err := ParseBootIF(bad); err == nil {
			t.Errorf("ParseBootIF(%q) = %v, want an error", bad, hw)
		}
		if _, err := ParseCmdline("clusterdebian.role=node BOOTIF=" + bad); err == nil || !strings.Contains(err.Error(), "BOOTIF") {
			t.Errorf("ParseCmdline with BOOTIF=%s: %v, want an error naming BOOTIF", bad, err)
		}
	}
	if got := FormatBootIF(nil); got != "" {
		t.Errorf("FormatBootIF(nil) = %q", got)
	}
}

func TestParseCmdline(t *testing.T) {
	// node1's own command line: no role, the head.
	c, err := ParseCmdline("BOOT_IMAGE=/live/vmlinuz boot=live components overlay.nfs_export=Y quiet")
	if err != nil || c.Node || c.Root != RootShared {
		t.Errorf("node1's line: %+v, %v", c, err)
	}
	if want := []string{"BOOT_IMAGE=/live/vmlinuz", "components", "overlay.nfs_export=Y", "quiet"}; !reflect.DeepEqual(c.Extra, want) {
		t.Errorf("Extra = %q, want %q", c.Extra, want)
	}
	for _, bad := range []string{
		"clusterdebian.head=node1", "clusterdebian.head=fd00::1", "clusterdebian.root=disk",
		"clusterdebian.layers=../etc", "clusterdebian.layers=02-a.ext4,", "clusterdebian.token",
	} {
		if _, err := ParseCmdline("clusterdebian.role=node " + bad); err == nil {
			t.Errorf("ParseCmdline(%q): want an error", bad)
		} else if key, _, _ := strings.Cut(bad, "="); !strings.Contains(err.Error(), key) {
			t.Errorf("ParseCmdline(%q): %v does not name %s", bad, err, key)
		}
	}
	c, _ = ParseCmdline("clusterdebian.role=node clusterdebian.head=10.99.0.1:80 clusterdebian.future=1")
	if c.HTTPPort != 0 || c.HTTPBase() != "http://10.99.0.1" || !reflect.DeepEqual(c.Extra, []string{"clusterdebian.future=1"}) {
		t.Errorf("port 80 and an unknown parameter: %+v", c)
	}
}

func TestCheckExtra(t *testing.T) {
	for _, ok := range []string{"", "quiet", "mitigations=off net.ifnames=0"} {
		if err := CheckExtra(ok); err != nil {
			t.Errorf("CheckExtra(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"a\nchain", "x=${y}", "a || b", "q=\"x\"", "clusterdebian.token=x", "quiet BOOTIF=01-52-54-00-ab-cd-ef"} {
		if err := CheckExtra(bad); err == nil {
			t.Errorf("CheckExtra(%q) = nil", bad)
		}
	}
}

func TestLayersAndInitrd(t *testing.T) {
	for name, want := range map[string]bool{
		BaseLayer: true, CustomLayer: true, "03-x.squashfs": true, "2-x.ext4": false, "02-x.img": false, "02-a b.ext4": false,
	} {
		if IsLayer(name) != want {
			t.Errorf("IsLayer(%q) = %v", name, !want)
		}
	}
	if InitrdFor(RootRAM) != InitrdFile || InitrdFor(RootShared) != NFSInitrdFile {
		t.Error("InitrdFor")
	}
	if r, err := ParseRootMode(""); err != nil || r != RootShared {
		t.Errorf("ParseRootMode(\"\") = %q, %v", r, err)
	}
}

func TestParseInterfaceChoice(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	for _, tc := range []struct {
		in   string
		want InterfaceChoice
		desc string
	}{
		{"", InterfaceChoice{}, "no card"},
		{"enp3s0", InterfaceChoice{Name: "enp3s0"}, `"enp3s0"`},
		{" eth0 ", InterfaceChoice{Name: "eth0"}, `"eth0"`},
		{"52:54:00:AB:CD:EF", InterfaceChoice{MAC: mac}, "the card with MAC 52:54:00:ab:cd:ef"},
		{"52-54-00-ab-cd-ef", InterfaceChoice{MAC: mac}, "the card with MAC 52:54:00:ab:cd:ef"},
		{"a-b-c-d-e-f", InterfaceChoice{Name: "a-b-c-d-e-f"}, `"a-b-c-d-e-f"`},
		{"1", InterfaceChoice{Index: 1}, "the 1st wired card"},
		{"2", InterfaceChoice{Index: 2}, "the 2nd wired card"},
		{"3", InterfaceChoice{Index: 3}, "the 3rd wired card"},
		{"11", InterfaceChoice{Index: 11}, "the 11th wired card"},
		{"22", InterfaceChoice{Index: 22}, "the 22nd wired card"},
	} {
		got, err := ParseInterfaceChoice(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) || got.Describe() != tc.desc {
			t.Errorf("ParseInterfaceChoice(%q) = %+v (%s), %v; want %+v (%s)", tc.in, got, got.Describe(), err, tc.want, tc.desc)
		}
		if again, err := ParseInterfaceChoice(got.String()); err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("String of %+v reads back as %+v, %v", got, again, err)
		}
	}
	for _, bad := range []string{"0", "-1", "65", "a/b", "eth 0", "averyveryverylongname", "01:00:5e:00:00:01", "52:54:00:ab:cd", "..", "ab:cd:ef:gh:ij:kl"} {
		if got, err := ParseInterfaceChoice(bad); err == nil {
			t.Errorf("ParseInterfaceChoice(%q) = %+v, want an error", bad, got)
		}
	}
	// node1's boot menu sets it on node1's own command line.
	c, err := ParseCmdline("boot=live " + ParamInterface + "=2 quiet")
	if err != nil || c.Interface != "2" || c.Node || !reflect.DeepEqual(c.Extra, []string{"quiet"}) {
		t.Errorf("node1's line with %s: %+v, %v", ParamInterface, c, err)
	}
	if _, err := ParseCmdline(ParamInterface + "=0"); err == nil || !strings.Contains(err.Error(), ParamInterface) {
		t.Errorf("a bad %s: %v, want an error naming it", ParamInterface, err)
	}
	if err := CheckExtra(ParamInterface + "=1"); err == nil {
		t.Errorf("CheckExtra lets %s into a node's extra parameters", ParamInterface)
	}
}

// TestScriptPaths: iPXE's and GRUB's per-machine scripts sit side by side
// under one prefix, named by the MAC as MACString writes it (GRUB's
// $net_default_mac is lower-case hex with colons too).
func TestScriptPaths(t *testing.T) {
	hw, _ := net.ParseMAC("52:54:00:AB:CD:EF")
	if got := ScriptPath(hw); got != "/boot/52:54:00:ab:cd:ef.ipxe" {
		t.Errorf("ScriptPath = %q", got)
	}
	if got := GRUBScriptPath(hw); got != "/boot/52:54:00:ab:cd:ef.grub" {
		t.Errorf("GRUBScriptPath = %q", got)
	}
	if !strings.HasPrefix(GRUBNetConfig, "grub/") || GRUBNetFile == UEFIPXEBootFile {
		t.Errorf("GRUB's files: %q, %q, %q", GRUBNetConfig, GRUBNetFile, UEFIPXEBootFile)
	}
}

func TestLayerSums(t *testing.T) {
	sums := map[string]string{CustomLayer: strings.Repeat("b1", 32), BaseLayer: strings.Repeat("0a", 32)}
	v := FormatLayerSums(sums)
	if want := BaseLayer + ":" + sums[BaseLayer] + "," + CustomLayer + ":" + sums[CustomLayer]; v != want {
		t.Errorf("FormatLayerSums = %s, want %s (name order)", v, want)
	}
	for _, bad := range []string{
		"", BaseLayer, BaseLayer + ":" + strings.Repeat("0A", 32), BaseLayer + ":" + strings.Repeat("0a", 31),
		"../x:" + strings.Repeat("0a", 32), v + "," + BaseLayer + ":" + strings.Repeat("0a", 32),
	} {
		if _, err := ParseLayerSums(bad); err == nil {
			t.Errorf("ParseLayerSums(%q) took it", bad)
		}
		if _, err := ParseCmdline(ParamLayerSums + "=" + bad); err == nil || !strings.Contains(err.Error(), ParamLayerSums) {
			t.Errorf("ParseCmdline of %s=%q: %v, want an error naming the parameter", ParamLayerSums, bad, err)
		}
	}
}
