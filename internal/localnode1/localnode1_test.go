package localnode1

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
)

// fakeHost is a host in a temporary folder: files under root, and
// commands that only change the fake's state.
type fakeHost struct {
	t        *testing.T
	root     string
	enabled  map[string]bool
	active   map[string]bool
	packages map[string]bool
	addrs    map[string][]netip.Prefix
	defaults []string
	cmds     []string
}

func newFakeHost(t *testing.T) *fakeHost {
	h := &fakeHost{
		t:        t,
		root:     t.TempDir(),
		enabled:  map[string]bool{"nfs-server.service": true},
		active:   map[string]bool{"nfs-server.service": true},
		packages: map[string]bool{},
		addrs:    map[string][]netip.Prefix{"eth0": {netip.MustParsePrefix("192.168.1.20/24")}, "eth1": nil},
		defaults: []string{"eth0"},
	}
	for _, p := range Packages(config.Default()) {
		h.packages[p] = true
	}
	h.file("/etc/network/interfaces", "source /etc/network/interfaces.d/*\n\nauto eth0\niface eth0 inet dhcp\n")
	h.file("/etc/hosts", "127.0.0.1 localhost\n")
	h.file("/etc/openmpi/openmpi-default-hostfile", "# Open MPI's own\n")
	h.file("/etc/passwd", "root:x:0:0::/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n")
	return h
}

func (h *fakeHost) file(path, data string) {
	h.t.Helper()
	p := filepath.Join(h.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *fakeHost) read(path string) string {
	data, err := os.ReadFile(filepath.Join(h.root, path))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(data)
}

func (h *fakeHost) run(_ context.Context, name string, args ...string) (string, error) {
	cmd := strings.Join(append([]string{name}, args...), " ")
	h.cmds = append(h.cmds, cmd)
	last := ""
	if len(args) > 0 {
		last = args[len(args)-1]
	}
	switch {
	case name == "systemctl" && args[0] == "is-active":
		if h.active[last] {
			return "active\n", nil
		}
		return "inactive\n", errors.New("exit status 3")
	case name == "systemctl" && args[0] == "is-enabled":
		if h.enabled[last] {
			return "enabled\n", nil
		}
		return "disabled\n", errors.New("exit status 1")
	case name == "systemctl" && args[0] == "enable":
		h.enabled[last] = true
	case name == "systemctl" && (args[0] == "start" || args[0] == "restart"):
		h.active[last] = true
		if last == ServiceName {
			// The head adds its address when it starts.
			h.addAddr("eth1", "10.99.0.1/24")
		}
	case name == "systemctl" && args[0] == "disable":
		h.enabled[last], h.active[last] = false, false
	case name == "dpkg-query":
		if h.packages[last] {
			return "installed", nil
		}
		return "", errors.New("exit status 1")
	case name == "apt-get" && args[0] == "install":
		for _, p := range args[3:] {
			h.packages[p] = true
		}
	case name == "ifup":
		h.addAddr(last, "10.99.0.1/24")
	case name == "ip" && args[0] == "addr" && args[1] == "del":
		p := netip.MustParsePrefix(args[2])
		h.addrs[last] = slices.DeleteFunc(h.addrs[last], func(a netip.Prefix) bool { return a == p })
	}
	return "", nil
}

func (h *fakeHost) addAddr(iface, p string) {
	a := netip.MustParsePrefix(p)
	if !slices.Contains(h.addrs[iface], a) {
		h.addrs[iface] = append(h.addrs[iface], a)
	}
}

func (h *fakeHost) system() *System {
	return &System{
		Root: h.root,
		Run:  h.run,
		Addrs: func(iface string) ([]netip.Prefix, error) {
			a, ok := h.addrs[iface]
			if !ok {
				return nil, fmt.Errorf("route ip+net: no such network interface")
			}
			return a, nil
		},
		DefaultRoutes: func() ([]string, error) { return h.defaults, nil },
		Log:           &strings.Builder{},
	}
}

func (h *fakeHost) ran(prefix string) bool {
	return slices.ContainsFunc(h.cmds, func(c string) bool { return strings.HasPrefix(c, prefix) })
}

// buildOut makes a build output folder with fake netboot files.
func buildOut(t *testing.T) string {
	out := t.TempDir()
	nb := filepath.Join(out, imagebuild.NetbootDir)
	os.MkdirAll(nb, 0o755)
	for _, f := range []string{contract.KernelFile, contract.InitrdFile, contract.NFSInitrdFile, contract.BaseLayer, contract.CustomLayer} {
		if err := os.WriteFile(filepath.Join(nb, f), []byte("fake "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func binary(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "clusterdebian")
	if err := os.WriteFile(p, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func summaries(p *Plan) string {
	var b strings.Builder
	p.Describe(&b)
	return b.String()
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost(t)
	out := buildOut(t)
	bin := binary(t)
	for _, c := range []struct {
		name  string
		opts  Options
		input string // the input the error is about
		want  []string
	}{
		{"no interface", Options{From: out}, InputInterface, []string{"interface: name the cluster network interface"}},
		{"loopback", Options{Interface: "lo", From: out}, InputInterface, []string{"interface lo", "loopback"}},
		{"missing interface", Options{Interface: "eth9", From: out}, InputInterface, []string{"interface eth9", "no such network interface"}},
		{"default route", Options{Interface: "eth0", From: out}, InputInterface, []string{"interface eth0", "default route", "second network card"}},
		{"no from", Options{Interface: "eth1"}, InputFrom, []string{"netboot folder: name the output folder"}},
		{"bad from", Options{Interface: "eth1", From: t.TempDir()}, InputFrom, []string{"netboot folder", "no vmlinuz"}},
		{"bad dhcp", Options{Interface: "eth1", From: out, DHCP: "sometimes"}, "network.dhcp", []string{"network.dhcp", `"sometimes"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Binary = bin
			_, err := MakePlan(ctx, h.system(), c.opts)
			if err == nil {
				t.Fatalf("no error, want one with %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !inputerr.Is(err, c.input) {
				t.Errorf("error %q is not about the input %s", err, c.input)
			}
		})
	}
	if _, err := MakePlan(ctx, h.system(), Options{Interface: "eth0", From: out, Binary: bin}); !errors.Is(err, ErrDefaultRoute) {
		t.Errorf("the default route's interface: %v, want ErrDefaultRoute (which Force gets past)", err)
	}
	// The RAM root needs the base layer.
	os.Remove(filepath.Join(out, imagebuild.NetbootDir, contract.BaseLayer))
	if _, err := MakePlan(ctx, h.system(), Options{Interface: "eth1", From: out, Binary: bin}); err == nil || !strings.Contains(err.Error(), contract.BaseLayer) {
		t.Errorf("without %s: %v", contract.BaseLayer, err)
	}
	// An interface configured in /etc/network/interfaces already.
	h.file("/etc/network/interfaces", "source /etc/network/interfaces.d/*\niface eth1 inet dhcp\n")
	if _, err := MakePlan(ctx, h.system(), Options{Interface: "eth1", From: buildOut(t), Binary: bin}); !errors.Is(err, ErrIfupdownStanza) || !strings.Contains(err.Error(), "/etc/network/interfaces") {
		t.Errorf("eth1 in /etc/network/interfaces: %v", err)
	}
	if cmds := strings.Join(h.cmds, "\n"); strings.Contains(cmds, "enable") || strings.Contains(cmds, "apt-get") {
		t.Errorf("a refused plan ran commands that change things:\n%s", cmds)
	}
}

func TestForceAndSharedRootWarn(t *testing.T) {
	h := newFakeHost(t)
	opts := Options{Interface: "eth0", From: buildOut(t), Binary: binary(t), Force: true, SharedRoot: true}
	// The state folder on the root file system the nodes would mount: refused.
	_, err := MakePlan(context.Background(), h.system(), opts)
	if err == nil || !strings.Contains(err.Error(), "--shared-root") || !strings.Contains(err.Error(), StateDir) || !strings.Contains(err.Error(), "file system of its own") {
		t.Errorf("--shared-root with the state folder on the root file system: %v", err)
	}
	// On a file system of its own (a partition mounted there): allowed.
	h.file(StateDir+"/.keep", "")
	sys := h.system()
	stateDir := filepath.Join(h.root, StateDir)
	sys.FileSystemID = func(path string) (uint64, error) {
		if path == stateDir {
			return 2, nil
		}
		return 1, nil
	}
	p, err := MakePlan(context.Background(), sys, opts)
	if err != nil {
		t.Fatal(err)
	}
	s := summaries(p)
	for _, want := range []string{"warning: interface eth0: this host's default route", "(forced)", "warning: shared root: ", `nodes.root = "shared"`} {
		if !strings.Contains(s, want) {
			t.Errorf("plan lacks %q:\n%s", want, s)
		}
	}
}

// TestApplyTwiceThenRemove sets a fake host up, checks that a second plan
// is empty, and that Remove puts every file back as it was.
func TestApplyTwiceThenRemove(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost(t)
	out := buildOut(t)
	bin := binary(t)
	delete(h.packages, "ipxe")
	opts := Options{Interface: "eth1", From: out, Binary: bin, DHCP: "auto"}
	before := map[string]string{}
	h.file("/etc/openmpi/openmpi-mca-params.conf", "# Debian's\nbtl = ^openib\n")
	for _, f := range []string{"/etc/network/interfaces", "/etc/hosts", "/etc/openmpi/openmpi-default-hostfile", "/etc/openmpi/openmpi-mca-params.conf"} {
		before[f] = h.read(f)
	}

	p, err := MakePlan(ctx, h.system(), opts)
	if err != nil {
		t.Fatal(err)
	}
	s := summaries(p)
	for _, want := range []string{"install packages: ipxe", "write " + UnitPath, "write " + ConfigPath, "write " + BinaryPath,
		"write /etc/network/interfaces.d/clusterdebian-eth1", "configure eth1 with 10.99.0.1/24 (ifupdown)",
		"copy the netboot files", "enable and start " + ServiceName, `nodes.root = "ram"`} {
		if !strings.Contains(s, want) {
			t.Errorf("plan lacks %q:\n%s", want, s)
		}
	}
	// The exports (per node) and the ssh client drop-in (per subnet) are
	// the head's to write, at run time.
	for _, notMine := range []string{ExportsPath, SSHConfigPath} {
		if strings.Contains(s, notMine) {
			t.Errorf("plan writes %s, which the head writes:\n%s", notMine, s)
		}
	}
	if err := p.Apply(ctx); err != nil {
		t.Fatalf("apply: %v\ncommands: %q", err, h.cmds)
	}
	if got := h.read(ConfigPath); !strings.Contains(got, `interface = "eth1"`) || !strings.Contains(got, `root = "ram"`) ||
		!strings.Contains(got, `boot_dir = "`+BootDir+`"`) || strings.Contains(got, "password = \"s") {
		t.Errorf("host config:\n%s", got)
	}
	if got := h.read(UnitPath); !strings.Contains(got, "ExecStart="+BinaryPath+" head --config "+ConfigPath) || !strings.Contains(got, "WantedBy=multi-user.target") {
		t.Errorf("unit:\n%s", got)
	}
	if got := h.read(filepath.Join(BootDir, contract.BaseLayer)); got != "fake "+contract.BaseLayer {
		t.Errorf("boot files not copied: %q", got)
	}
	if !h.enabled[ServiceName] || !h.active[ServiceName] || !h.ran("ifup eth1") {
		t.Errorf("service or network not brought up: %q", h.cmds)
	}

	// Second run: nothing to do.
	p, err = MakePlan(ctx, h.system(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Changes) != 0 || !strings.Contains(summaries(p), "no changes") {
		t.Errorf("second plan is not empty:\n%s", summaries(p))
	}
	// A new build changes the boot files only, and restarts the head.
	os.WriteFile(filepath.Join(out, imagebuild.NetbootDir, contract.CustomLayer), []byte("a newer layer"), 0o644)
	p, err = MakePlan(ctx, h.system(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if s := summaries(p); len(p.Changes) != 3 || !strings.Contains(s, "copy the netboot files") || !strings.Contains(s, contract.CustomLayer) || !strings.Contains(s, "restart "+ServiceName) {
		t.Errorf("after a new build, plan:\n%s", s)
	}
	if err := p.Apply(ctx); err != nil {
		t.Fatal(err)
	}

	// What the head writes at run time: its blocks and links.
	h.file("/etc/hosts", before["/etc/hosts"]+"# BEGIN clusterdebian\n10.99.0.1 node1\n# END clusterdebian\n")
	h.file("/etc/openmpi/openmpi-default-hostfile", "node1 slots=2\n")
	h.file("/etc/cluster/mpi.hosts", "node1 slots=2\n")
	h.file("/etc/ssh/ssh_known_hosts", "# BEGIN clusterdebian\n@cert-authority node* ssh-ed25519 AAAA\n# END clusterdebian\n")
	h.file(ExportsPath, "/home 10.99.0.5(rw,root_squash)\n")
	h.file(SSHConfigPath, "Host node* *.cluster 10.99.0.*\n")
	h.file("/etc/openmpi/openmpi-mca-params.conf", "# BEGIN clusterdebian\nbtl_tcp_if_include = 10.99.0.0/24\n# END clusterdebian\n"+before["/etc/openmpi/openmpi-mca-params.conf"])
	h.file("/etc/openmpi/prte-mca-params.conf", "# BEGIN clusterdebian\nprte_if_include = 10.99.0.0/24\n# END clusterdebian\n")
	os.MkdirAll(filepath.Join(h.root, "home/user"), 0o755)
	os.Symlink("/etc/cluster/mpi.hosts", filepath.Join(h.root, "home/user/mpi.hosts"))
	h.file("/home/user/mine", "the user's own file\n")

	rm, err := PlanRemove(h.system())
	if err != nil || rm == nil {
		t.Fatalf("PlanRemove: %v, %v", rm, err)
	}
	var desc strings.Builder
	rm.Describe(&desc)
	if !strings.Contains(desc.String(), "kept: the packages localnode1 installed (ipxe)") {
		t.Errorf("remove plan:\n%s", desc.String())
	}
	h.cmds = nil
	if err := rm.Remove(ctx); err != nil {
		t.Fatalf("remove: %v", err)
	}
	for f, want := range before {
		if got := h.read(f); got != want {
			t.Errorf("%s after remove = %q, want %q", f, got, want)
		}
	}
	for _, gone := range []string{UnitPath, ConfigPath, BinaryPath, ExportsPath, SSHConfigPath, "/etc/openmpi/prte-mca-params.conf", "/etc/network/interfaces.d/clusterdebian-eth1",
		StateDir, "/etc/cluster", "/etc/clusterdebian", "/home/user/mpi.hosts", "/etc/exports.d", "/etc/ssh/ssh_known_hosts"} {
		if _, err := os.Lstat(filepath.Join(h.root, gone)); err == nil {
			t.Errorf("%s is still there after remove", gone)
		}
	}
	if h.read("/home/user/mine") != "the user's own file\n" {
		t.Error("remove touched a user's file")
	}
	if h.enabled[ServiceName] || h.active[ServiceName] || len(h.addrs["eth1"]) != 0 || !h.packages["ipxe"] {
		t.Errorf("after remove: enabled %v active %v addrs %v ipxe kept %v", h.enabled[ServiceName], h.active[ServiceName], h.addrs["eth1"], h.packages["ipxe"])
	}
	// ifdown runs while the stanza is still there.
	if i, j := slices.Index(h.cmds, "ifdown --force eth1"), slices.Index(h.cmds, "systemctl daemon-reload"); i < 0 || j < i {
		t.Errorf("ifdown missing or late: %q", h.cmds)
	}
	if rm, err := PlanRemove(h.system()); rm != nil || err != nil {
		t.Errorf("a second remove found %v, %v", rm, err)
	}
}

func TestNetworkTools(t *testing.T) {
	for _, c := range []struct {
		active string
		want   string
		path   string
		has    string
	}{
		{"NetworkManager.service", NetNetworkManager, "/etc/NetworkManager/system-connections/clusterdebian-eth1.nmconnection", "address1=10.99.0.1/24"},
		{"systemd-networkd.service", NetNetworkd, "/etc/systemd/network/10-clusterdebian-eth1.network", "Address=10.99.0.1/24"},
	} {
		h := newFakeHost(t)
		os.Remove(filepath.Join(h.root, "etc/network/interfaces"))
		h.active[c.active] = true
		p, err := MakePlan(context.Background(), h.system(), Options{Interface: "eth1", From: buildOut(t), Binary: binary(t)})
		if err != nil {
			t.Fatal(err)
		}
		if p.Network != c.want || !strings.Contains(summaries(p), "write "+c.path) {
			t.Errorf("%s: network %s, plan:\n%s", c.active, p.Network, summaries(p))
		}
		data, mode := netConfig(p.Network, "eth1", p.Address)
		if !strings.Contains(data, c.has) || (c.want == NetNetworkManager && mode != 0o600) {
			t.Errorf("%s config (mode %o):\n%s", c.want, mode, data)
		}
	}
	h := newFakeHost(t)
	os.Remove(filepath.Join(h.root, "etc/network/interfaces"))
	p, err := MakePlan(context.Background(), h.system(), Options{Interface: "eth1", From: buildOut(t), Binary: binary(t)})
	if err != nil {
		t.Fatal(err)
	}
	if p.Network != NetNone || !strings.Contains(summaries(p), "the head adds 10.99.0.1/24 at each start") {
		t.Errorf("no network tool: %s\n%s", p.Network, summaries(p))
	}
}

func TestIfupdownParsing(t *testing.T) {
	for text, want := range map[string]bool{
		"source /etc/network/interfaces.d/*\n":         true,
		"  source-directory interfaces.d\n":            true,
		"source-directory /etc/network/interfaces.d\n": true,
		"# source /etc/network/interfaces.d/*\n":       false,
		"auto lo\n":                                    false,
	} {
		if got := ifupdownSources(text); got != want {
			t.Errorf("ifupdownSources(%q) = %v", text, got)
		}
	}
	if !ifupdownConfigures("auto eth1\niface eth1 inet dhcp\n", "eth1") || ifupdownConfigures("iface eth10 inet dhcp\n", "eth1") {
		t.Error("ifupdownConfigures confuses interfaces")
	}
}

func TestDefaultRoutes(t *testing.T) {
	v4 := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"uplink0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
		"uplink0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
		"cluster0\t0063000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	if got := parseRoute([]byte(v4)); !slices.Equal(got, []string{"uplink0"}) {
		t.Errorf("parseRoute = %v", got)
	}
	zero := strings.Repeat("0", 32)
	v6 := zero + " 00 " + zero + " 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n" +
		zero + " 00 " + zero + " 00 " + zero + " ffffffff 00000001 00000000 00200200 lo\n" +
		"fe800000000000000000000000000000 40 " + zero + " 00 " + zero + " 00000100 00000001 00000000 00000001 eth1\n"
	if got := parseIPv6Route([]byte(v6)); !slices.Equal(got, []string{"wlan0"}) {
		t.Errorf("parseIPv6Route = %v", got)
	}
}

func TestSyncPlan(t *testing.T) {
	from, to := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(from, "a"), []byte("one"), 0o644)
	os.WriteFile(filepath.Join(from, "b"), []byte("two"), 0o644)
	os.WriteFile(filepath.Join(to, "old"), []byte("stale"), 0o644)
	copies, stale, err := syncPlan(from, to)
	if err != nil || !slices.Equal(copies, []string{"a", "b"}) || !slices.Equal(stale, []string{"old"}) {
		t.Fatalf("syncPlan = %v %v %v", copies, stale, err)
	}
	if err := syncFiles(from, to, copies, stale); err != nil {
		t.Fatal(err)
	}
	copies, stale, err = syncPlan(from, to)
	if err != nil || len(copies)+len(stale) != 0 {
		t.Errorf("after syncing: %v %v %v", copies, stale, err)
	}
	if data, _ := os.ReadFile(filepath.Join(to, "b")); string(data) != "two" {
		t.Errorf("b = %q", data)
	}
}
