package head

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

func TestLayers(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"01-base.squashfs", "03-site.squashfs", "02-custom.ext4", "vmlinuz", "initrd.img", "02-x y.ext4", "notes.ext4"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "04-dir.squashfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := Layers(dir)
	if err != nil || !slices.Equal(got, []string{"02-custom.ext4", "03-site.squashfs"}) {
		t.Errorf("Layers = %q, %v", got, err)
	}
	if _, err := Layers(filepath.Join(dir, "missing")); err == nil {
		t.Error("Layers of a missing folder: no error")
	}
}

func TestScript(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:AB:CD:EF")
	c := contract.Cmdline{Node: true, Head: netip.MustParseAddr("10.99.0.1"), Token: "t", Root: contract.RootRAM, Extra: []string{"x=1"}}
	s, err := Script("node23", mac, c)
	if err != nil {
		t.Fatal(err)
	}
	want := "#!ipxe\n" +
		"echo ClusterDebian: booting node23 (52:54:00:ab:cd:ef) from head 10.99.0.1\n" +
		"kernel http://10.99.0.1/netboot/vmlinuz initrd=initrd.img " + c.Format() + "\n" +
		"initrd http://10.99.0.1/netboot/initrd.img\n" +
		"boot\n"
	if s != want {
		t.Errorf("script:\n%s\nwant:\n%s", s, want)
	}
}

func TestChooseInterface(t *testing.T) {
	lo := Link{Name: "lo", Up: true, Loopback: true, Carrier: true}
	eth := func(name string) Link {
		return Link{Name: name, Up: true, Carrier: true, Ether: true, Physical: true}
	}
	br := Link{Name: "br0", Up: true, Carrier: true, Ether: true, Bridge: true}
	slave := eth("eth1")
	slave.Slave = true
	veth := Link{Name: "veth1", Up: true, Carrier: true, Ether: true}
	wifi := eth("wlan0")
	wifi.Wireless = true
	unplugged := eth("eth2")
	unplugged.Carrier = false

	for _, tc := range []struct {
		links []Link
		want  string
		err   []string
	}{
		{[]Link{lo, eth("eth0")}, "eth0", nil},
		{[]Link{lo, br, slave, veth, wifi, unplugged}, "br0", nil},
		{[]Link{lo, eth("eth0"), eth("eth3")}, "", []string{"several", "eth0, eth3", "name it"}},
		{[]Link{lo, unplugged, wifi, veth}, "", []string{"eth2 (no cable)", "wlan0 (wireless)", "veth1 (virtual)", "name the interface"}},
		{[]Link{lo}, "", []string{"interfaces: none"}},
	} {
		got, err := chooseInterface(tc.links)
		if got != tc.want {
			t.Errorf("chooseInterface(%v) = %q, want %q", tc.links, got, tc.want)
		}
		for _, w := range tc.err {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("chooseInterface(%v): error %v lacks %q", tc.links, err, w)
			}
		}
		if oe := (*inputerr.Error)(nil); tc.err != nil && (!errors.As(err, &oe) || oe.Input != "Interface") {
			t.Errorf("chooseInterface(%v): error %v is not an input error about Interface", tc.links, err)
		}
		if tc.err == nil && err != nil {
			t.Errorf("chooseInterface(%v): %v", tc.links, err)
		}
	}
}

// TestPickAddress: an administrator's address wins (network.address, then
// a permanent address on the interface that the head did not add: in the
// subnet first); leases and the head's own addresses leave the choice to
// the LAN or the default.
func TestPickAddress(t *testing.T) {
	subnet := netip.MustParsePrefix("10.99.0.0/24")
	p := netip.MustParsePrefix
	static := func(s string) IfAddr { return IfAddr{Prefix: p(s)} }
	dynamic := func(s string) IfAddr { return IfAddr{Prefix: p(s), Dynamic: true} }
	for _, tc := range []struct {
		name       string
		have       []IfAddr
		configured netip.Prefix
		ours       []netip.Prefix
		want       string
		src        addrSource
	}{
		{"nothing", nil, netip.Prefix{}, nil, "", ""},
		{"configured", []IfAddr{static("10.99.0.254/24")}, p("192.168.50.10/23"), nil, "192.168.50.10/23", srcConfigured},
		{"in the subnet", []IfAddr{static("192.168.1.5/24"), static("10.99.0.254/24")}, netip.Prefix{}, nil, "10.99.0.254/24", srcInterface},
		{"in the subnet, another length", []IfAddr{static("10.99.0.254/16")}, netip.Prefix{}, nil, "10.99.0.254/24", srcInterface},
		{"another network", []IfAddr{static("192.168.50.10/23")}, netip.Prefix{}, nil, "192.168.50.10/23", srcInterface},
		{"a lease", []IfAddr{dynamic("192.168.50.10/23")}, netip.Prefix{}, nil, "", ""},
		{"link-local", []IfAddr{static("169.254.3.4/16")}, netip.Prefix{}, nil, "", ""},
		{"the head's own", []IfAddr{static("10.99.0.1/24")}, netip.Prefix{}, []netip.Prefix{p("10.99.0.1/24")}, "", ""},
		{"a /32", []IfAddr{static("192.168.50.10/32")}, netip.Prefix{}, nil, "", ""},
		{"the head's own and the administrator's", []IfAddr{static("10.99.0.1/24"), static("172.16.0.9/16")}, netip.Prefix{}, []netip.Prefix{p("10.99.0.1/24")}, "172.16.0.9/16", srcInterface},
	} {
		got, src, ok := pickAddress(tc.have, tc.configured, subnet, tc.ours)
		if ok != (tc.want != "") || (ok && (got.String() != tc.want || src != tc.src)) {
			t.Errorf("%s: pickAddress = %v, %q, %v; want %q, %q", tc.name, got, src, ok, tc.want, tc.src)
		}
	}
}

func TestToken(t *testing.T) {
	dir := t.TempDir()
	tok, kept, err := prepareState(dir)
	if err != nil || kept != "" {
		t.Fatal(err)
	}
	if !validToken(tok) {
		t.Fatalf("token %q", tok)
	}
	fi, err := os.Stat(filepath.Join(dir, contract.TokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, contract.TFTPDir)); err != nil || !fi.IsDir() {
		t.Errorf("tftp root: %v", err)
	}
	again, kept, err := prepareState(dir)
	if err != nil || again != tok || kept != "" {
		t.Errorf("second start: token %q, %q, %v; want the first one %q", again, kept, err, tok)
	}
	// A damaged token file is set aside and a new token made.
	os.WriteFile(filepath.Join(dir, contract.TokenFile), []byte(tok[:20]), 0o600)
	fresh, kept, err := prepareState(dir)
	if err != nil || !validToken(fresh) || fresh == tok {
		t.Fatalf("damaged token: new token %q, %v", fresh, err)
	}
	if b, err := os.ReadFile(kept); err != nil || string(b) != tok[:20] {
		t.Errorf("damaged token kept as %q: %q, %v", kept, b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, contract.TokenFile)); strings.TrimSpace(string(b)) != fresh {
		t.Errorf("token file holds %q, want the new token", b)
	}
}

func TestNeedsIPXEMark(t *testing.T) {
	ev := func(stage, detail string) bootstage.Event { return bootstage.Event{Stage: stage, Detail: detail} }
	script := "http://10.99.0.1/boot/52:54:00:00:00:01.ipxe (ipxe-script)"
	offer := ev(bootstage.DHCPOffered, script)
	for _, tc := range []struct {
		name string
		hist []bootstage.Event
		want bool
	}{
		{"first contact from a ROM iPXE", []bootstage.Event{offer}, true},
		{"second iPXE offer", []bootstage.Event{offer, ev(bootstage.IPXELoaded, "rom"), offer}, false},
		{"chainloaded over TFTP", []bootstage.Event{
			ev(bootstage.DHCPOffered, "snponly.efi (uefi-tftp)"), ev("dhcp-acked", "snponly.efi (uefi-tftp)"),
			ev(bootstage.IPXELoaded, "tftp snponly.efi"), offer}, false},
		{"reboot after a full boot", []bootstage.Event{offer, ev(bootstage.IPXELoaded, "rom"),
			ev(bootstage.ScriptFetched, ""), ev(bootstage.KernelFetched, ""), ev(bootstage.InitrdFetched, ""), offer}, true},
		{"plain PXE, no TFTP load", []bootstage.Event{ev(bootstage.DHCPOffered, "undionly.kpxe (bios-tftp)"), offer}, true},
	} {
		if got := needsIPXEMark(tc.hist); got != tc.want {
			t.Errorf("%s: needsIPXEMark = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestExportsText(t *testing.T) {
	clients := []netip.Addr{netip.MustParseAddr("10.99.0.5"), netip.MustParseAddr("10.99.0.12")}
	shared := ExportsText(contract.RootShared, clients)
	if !strings.Contains(shared, "\n/ 10.99.0.5(rw,no_root_squash,no_subtree_check,fsid=1,async)\n/ 10.99.0.12(rw,no_root_squash,") {
		t.Errorf("shared root exports: %q", shared)
	}
	ram := ExportsText(contract.RootRAM, clients)
	if !strings.Contains(ram, "\n/home 10.99.0.5(rw,root_squash,") || !strings.Contains(ram, "\n/home 10.99.0.12(rw,root_squash,") || strings.Contains(ram, "\n/ ") {
		t.Errorf("RAM root exports: %q", ram)
	}
	// Nobody booted: nothing is exported, not even to the subnet.
	if none := ExportsText(contract.RootShared, nil); strings.Count(none, "\n") != 1 || !strings.HasPrefix(none, "#") {
		t.Errorf("exports without nodes: %q", none)
	}
}

// TestHostCertificate: on the live image node1 gets a key made for this boot
// in contract.RunDir; on an installed machine (localnode1) its own ed25519 key is
// certified instead, so the key its users trust stays.
func TestHostCertificate(t *testing.T) {
	ca, err := sshtrust.OpenCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	newHead := func(root string) (*Head, *fakeSystem) {
		sys := newFakeSystem(root)
		return &Head{opts: Options{ClusterRoot: root}, sys: sys, addr: netip.MustParseAddr("10.99.0.1"),
			log: slog.New(slog.NewTextHandler(io.Discard, nil)), cluster: &cluster{ca: ca}}, sys
	}
	certOf := func(path string) *ssh.Certificate {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			t.Fatal(err)
		}
		c, ok := k.(*ssh.Certificate)
		if !ok || !slices.Contains(c.ValidPrincipals, "node1") || !slices.Contains(c.ValidPrincipals, "10.99.0.1") {
			t.Fatalf("%s: not a host certificate for node1 and 10.99.0.1: %v", path, k)
		}
		return c
	}

	installed := t.TempDir()
	key, err := sshtrust.NewHostKey(filepath.Join(installed, "etc/ssh"))
	if err != nil {
		t.Fatal(err)
	}
	h, sys := newHead(installed)
	if err := h.hostCertificate(); err != nil {
		t.Fatal(err)
	}
	c := certOf(filepath.Join(installed, InstalledHostCert))
	if string(c.Key.Marshal()) != string(key.Marshal()) {
		t.Error("the installed machine's certificate is not for its own host key")
	}
	if !slices.Contains(c.ValidPrincipals, fakeHostname) {
		t.Errorf("principals %v lack the machine's host name %q", c.ValidPrincipals, fakeHostname)
	}
	if got := sys.calls(); !slices.Equal(got, []string{"reload ssh"}) {
		t.Errorf("system calls %q, want sshd reloaded once", got)
	}
	// A restart with the same key leaves sshd alone.
	if err := h.hostCertificate(); err != nil {
		t.Fatal(err)
	}
	if got := sys.calls(); len(got) != 1 {
		t.Errorf("after a restart, system calls %q, want no second reload", got)
	}
	// A cluster root that is not the machine's: its sshd is not asked.
	other, sys2 := newHead(installed)
	sys2.root = t.TempDir()
	os.Remove(filepath.Join(installed, InstalledHostCert))
	if err := other.hostCertificate(); err != nil {
		t.Fatal(err)
	}
	if got := sys2.calls(); len(got) != 0 {
		t.Errorf("cluster root not the machine's: system calls %q, want none", got)
	}
	if _, err := os.Stat(filepath.Join(installed, contract.RunDir, "ssh")); err == nil {
		t.Error("a per-boot key was made on an installed machine")
	}

	live := t.TempDir()
	if _, err := sshtrust.NewHostKey(filepath.Join(live, "etc/ssh")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(live, filepath.Dir(LiveSSHDConfig)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(live, LiveSSHDConfig), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	lh, _ := newHead(live)
	if err := lh.hostCertificate(); err != nil {
		t.Fatal(err)
	}
	certOf(filepath.Join(live, contract.RunDir, "ssh", sshtrust.HostCertFile))
	if _, err := os.Stat(filepath.Join(live, InstalledHostCert)); err == nil {
		t.Error("the live image's shipped key was certified")
	}
}

// TestDetectInterface: at boot the wired NICs are down; the head brings the
// physical ones up (only those) and picks the one that then has a carrier.
func TestDetectInterface(t *testing.T) {
	sys := &upOnDemand{fakeSystem: newFakeSystem(t.TempDir())}
	sys.links = []Link{
		{Name: "lo", Up: true, Loopback: true, Carrier: true},
		{Name: "enp3s0", Ether: true, Physical: true},
		{Name: "wlan0", Ether: true, Physical: true, Wireless: true},
		{Name: "veth0", Ether: true},
	}
	name, _, _, err := detectInterface(context.Background(), sys)
	if err != nil || name != "enp3s0" {
		t.Fatalf("detectInterface = %q, %v; want enp3s0", name, err)
	}
	if got := sys.calls(); !slices.Equal(got, []string{"link up enp3s0"}) {
		t.Errorf("calls %q, want only the wired physical NIC brought up", got)
	}
}

// upOnDemand is a machine whose links get a carrier once brought up, as a
// NIC plugged into a switch does.
type upOnDemand struct{ *fakeSystem }

func (u *upOnDemand) LinkUp(ctx context.Context, iface string) error {
	u.fakeSystem.LinkUp(ctx, iface)
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range u.links {
		if u.links[i].Name == iface {
			u.links[i].Up, u.links[i].Carrier = true, true
		}
	}
	return nil
}

// TestOptionErrors: every option the head refuses comes back as an
// *inputerr.Error naming its field, with what is wrong, and none names a
// command-line flag or cluster.toml key (the CLI adds those).
func TestOptionErrors(t *testing.T) {
	boot := t.TempDir()
	for _, f := range []string{contract.KernelFile, contract.InitrdFile} {
		if err := os.WriteFile(filepath.Join(boot, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ipxe := t.TempDir()
	good := Options{Subnet: netip.MustParsePrefix("10.99.0.0/24"), BootDir: boot, IPXEDir: ipxe, StateDir: t.TempDir()}
	if _, err := good.withDefaults(); err != nil {
		t.Fatalf("good options: %v", err)
	}
	for _, tc := range []struct {
		field, want string
		change      func(*Options)
	}{
		{"Subnet", "not an IPv4 subnet", func(o *Options) { o.Subnet = netip.Prefix{} }},
		{"Subnet", "too small", func(o *Options) { o.Subnet = netip.MustParsePrefix("10.99.0.0/31") }},
		{"Subnet", "host bits", func(o *Options) { o.Subnet = netip.MustParsePrefix("10.99.0.1/24") }},
		{"Subnet", "not IPv4", func(o *Options) { o.Subnet = netip.MustParsePrefix("fd00::/64") }},
		{"DHCP", `"sometimes"`, func(o *Options) { o.DHCP = "sometimes" }},
		{"Root", `"disk"`, func(o *Options) { o.Root = "disk" }},
		{"HTTPPort", "70000", func(o *Options) { o.HTTPPort = 70000 }},
		{"ExtraCmdline", "clusterdebian.role=node", func(o *Options) { o.ExtraCmdline = "quiet clusterdebian.role=node" }},
		{"BootDir", "no vmlinuz", func(o *Options) { o.BootDir = t.TempDir() }},
		{"BootDir", "the live medium's folder", func(o *Options) { o.BootDir = "" }},
		{"BootDir", contract.BaseLayer, func(o *Options) { o.Root = contract.RootRAM }},
	} {
		o := good
		tc.change(&o)
		_, err := o.withDefaults()
		var oe *inputerr.Error
		if !errors.As(err, &oe) || oe.Input != tc.field || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want an input error about %s saying %q", tc.field, err, tc.field, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "--") || strings.Contains(err.Error(), "network.") || strings.Contains(err.Error(), "head.") {
			t.Errorf("%s: error %q names a flag or key", tc.field, err)
		}
	}
}
