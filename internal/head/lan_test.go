package head

// Unit tests of what keeps bystanders on a shared LAN out: per-node NFS
// exports, the iPXE script only for machines that did DHCP with the head,
// and a state folder no export reaches. TestHeadInNetns runs the same rules
// against real clients.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netboot/httpboot"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

var (
	lanSubnet = netip.MustParsePrefix("10.99.0.0/24")
	lanHead   = netip.MustParseAddr("10.99.0.1")
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// exportedTo returns the clients of an exports text, in order.
func exportedTo(text string) []string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if f := strings.Fields(l); len(f) == 2 && !strings.HasPrefix(l, "#") {
			client, _, _ := strings.Cut(f[1], "(")
			out = append(out, f[0]+" "+client)
		}
	}
	return out
}

// TestExportSet: nodes are exported one by one, a burst costs one more run
// of the NFS server while one is running, the set survives a restart, and a
// prune takes out the pruned nodes and the unregistered old ones.
func TestExportSet(t *testing.T) {
	sys := newFakeSystem(t.TempDir())
	log := slog.New(slog.DiscardHandler)
	state := filepath.Join(t.TempDir(), contract.BootedFile)
	e, err := newExportSet(state, contract.RootShared, sys, log)
	must(t, err)
	ctx := context.Background()
	must(t, e.apply(ctx))
	if got := sys.exportCalls(); len(got) != 1 || len(exportedTo(got[0])) != 0 {
		t.Fatalf("first exports %q, want one run exporting nothing", got)
	}

	// One node: its export is in place when wait returns.
	must(t, e.wait(ctx, e.add("52:54:00:00:00:05", addr("10.99.0.5"))))
	if got := sys.exportCalls(); len(got) != 2 || !slices.Equal(exportedTo(got[1]), []string{"/ 10.99.0.5"}) {
		t.Fatalf("exports after one node: %q", got)
	}

	// A burst while the NFS server is busy: the first add starts a run
	// that the gate holds; the 40 others are taken by one more run.
	gate := make(chan struct{})
	sys.mu.Lock()
	sys.exportGate = gate
	sys.mu.Unlock()
	first := e.add("52:54:00:00:01:00", addr("10.99.0.100"))
	waitFor(t, "the NFS server to be asked", func() bool { return len(sys.exportCalls()) == 3 })
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			hw := net.HardwareAddr{0x52, 0x54, 0, 0, 2, byte(i)}
			if err := e.wait(ctx, e.add(hw.String(), netip.AddrFrom4([4]byte{10, 99, 0, byte(101 + i)}))); err != nil {
				t.Error(err)
			}
		})
	}
	// Every add is recorded before the gate opens.
	waitFor(t, "the burst to be recorded", func() bool { return len(e.Clients()) == 42 })
	close(gate)
	wg.Wait()
	must(t, e.wait(ctx, first))
	calls := sys.exportCalls()
	if len(calls) != 4 {
		t.Errorf("%d runs of the NFS server for a burst of 41 boots, want 2 (the one running, one for the rest)", len(calls)-2)
	}
	if got := exportedTo(calls[len(calls)-1]); len(got) != 42 || got[0] != "/ 10.99.0.5" || got[41] != "/ 10.99.0.140" {
		t.Errorf("exports after the burst: %d lines, %q", len(got), got)
	}
	sys.mu.Lock()
	sys.exportGate = nil
	sys.mu.Unlock()

	// A restarted head loads the set, and its file is root's only.
	again, err := newExportSet(state, contract.RootShared, sys, log)
	must(t, err)
	if got := again.Clients(); len(got) != 42 {
		t.Errorf("after a restart %d clients, want 42", len(got))
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, %v; want mode 0600", state, fi.Mode(), err)
	}

	// Prune: node5 was pruned; 10.99.0.100 is registered; the burst's
	// machines are not, and booted "an hour ago".
	e.now = func() time.Time { return time.Now().Add(time.Hour) }
	removed := e.prune([]registry.Node{{MAC: "52:54:00:00:00:05", IP: "10.99.0.5"}},
		[]registry.Node{{MAC: "52:54:00:00:01:00", IP: "10.99.0.100", Role: registry.RoleNode}})
	if len(removed) != 41 || removed[0] != addr("10.99.0.5") {
		t.Errorf("prune removed %v, want node5 and the 40 unregistered machines", removed)
	}
	must(t, e.wait(ctx, e.gen))
	calls = sys.exportCalls()
	if got := exportedTo(calls[len(calls)-1]); !slices.Equal(got, []string{"/ 10.99.0.100"}) {
		t.Errorf("exports after the prune: %q", got)
	}
	// A machine that booted moments ago and is not registered yet keeps
	// its export: it may be on its way.
	e.now = time.Now
	must(t, e.wait(ctx, e.add("52:54:00:00:03:00", addr("10.99.0.200"))))
	if removed := e.prune(nil, nil); len(removed) != 0 {
		t.Errorf("a prune removed %v, which booted just now", removed)
	}
	// A pruned node that registered again before the head withdrew its
	// export (prune during a registration storm) keeps it.
	back := registry.Node{MAC: "52:54:00:00:03:00", IP: "10.99.0.200", Role: registry.RoleNode}
	if removed := e.prune([]registry.Node{back}, []registry.Node{back}); len(removed) != 0 {
		t.Errorf("a prune removed %v, registered again", removed)
	}
}

// TestExportSetRegistryAndFailure: registered nodes get an export (a head
// of an earlier version knew only them), at their new address too; the
// head's own record and addresses off the subnet do not; a failed export
// releases the waiters and is retried at the next change.
func TestExportSetRegistryAndFailure(t *testing.T) {
	sys := newFakeSystem(t.TempDir())
	e, err := newExportSet("", contract.RootRAM, sys, slog.New(slog.DiscardHandler))
	must(t, err)
	ctx := context.Background()
	e.sync([]registry.Node{
		{MAC: "52:54:00:00:00:01", IP: "10.99.0.1", Role: registry.RoleHead},
		{MAC: "52:54:00:00:00:07", IP: "10.99.0.7", Role: registry.RoleNode},
		{MAC: "52:54:00:00:00:09", IP: "192.168.1.9", Role: registry.RoleNode},
	}, lanSubnet)
	must(t, e.wait(ctx, e.gen))
	calls := sys.exportCalls()
	if len(calls) != 1 || !slices.Equal(exportedTo(calls[0]), []string{"/home 10.99.0.7"}) {
		t.Fatalf("exports from the registry: %q", calls)
	}
	e.sync([]registry.Node{{MAC: "52:54:00:00:00:07", IP: "10.99.0.7", Role: registry.RoleNode}}, lanSubnet)
	if e.applied != e.gen || len(sys.exportCalls()) != 1 {
		t.Error("an unchanged registry changed the exports")
	}

	sys.mu.Lock()
	sys.exportErr = errors.New("exportfs: /home does not support NFS export")
	sys.mu.Unlock()
	must(t, e.wait(ctx, e.add("52:54:00:00:00:08", addr("10.99.0.8"))))
	sys.mu.Lock()
	sys.exportErr = nil
	sys.mu.Unlock()
	// The same set again: after a failure the NFS server is asked anew.
	must(t, e.wait(ctx, e.add("52:54:00:00:00:08", addr("10.99.0.8"))))
	calls = sys.exportCalls()
	if len(calls) != 3 || calls[1] != calls[2] {
		t.Errorf("exports around a failure: %q, want the failed one tried again", calls)
	}
}

// TestStateExposed: the state folder is refused on the exported file
// system, wherever it is mounted, and accepted on a file system of its own
// or outside the export.
func TestStateExposed(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "var/lib/clusterdebian")
	sys := newFakeSystem(root)
	for _, tc := range []struct {
		name            string
		state, exported string
		ownFS           bool
		want            bool
	}{
		{"inside the exported root, not made yet", state, root, false, true},
		{"inside the exported root, on its own file system", state, root, true, false},
		{"outside /home, the RAM root's export", state, filepath.Join(root, "home"), false, false},
		{"the exported folder itself", root, root, false, true},
		{"elsewhere", t.TempDir(), root, false, false},
	} {
		sys.fsIDs = nil
		if tc.ownFS {
			must(t, os.MkdirAll(tc.state, 0o700))
			sys.fsIDs = map[string]uint64{tc.state: 1<<63 + 7}
		}
		got, err := StateExposed(tc.state, tc.exported, sys.FileSystemID)
		if err != nil || got != tc.want {
			t.Errorf("%s: exposed = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}

	// New refuses it before touching the machine, naming StateDir.
	os.RemoveAll(filepath.Join(root, "var"))
	boot := t.TempDir()
	for _, f := range []string{contract.KernelFile, contract.InitrdFile} {
		must(t, os.WriteFile(filepath.Join(boot, f), nil, 0o644))
	}
	sys.fsIDs = nil
	_, err := New(context.Background(), Options{Subnet: lanSubnet, BootDir: boot, IPXEDir: t.TempDir(), StateDir: state,
		ClusterRoot: root, System: sys, Logger: slog.New(slog.DiscardHandler), Interface: "eth0"})
	var oe *inputerr.Error
	if !errors.As(err, &oe) || oe.Input != InputStateDir || !strings.Contains(err.Error(), "SSH CA key") || !strings.Contains(err.Error(), "file system of its own") {
		t.Errorf("New with the state folder in the exported root: %v, want an input error about StateDir", err)
	}
	if calls := sys.calls(); len(calls) != 0 {
		t.Errorf("a refused head touched the machine: %q", calls)
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("a refused head made its state folder")
	}
}

// gateHead is a head with a DHCP server (not serving: only its leases and
// mode count) in mode m, for admit and script.
func gateHead(t *testing.T, m dhcp.Mode, leases ...dhcp.Lease) *Head {
	t.Helper()
	leaseFile := filepath.Join(t.TempDir(), contract.LeasesFile)
	data, err := json.Marshal(map[string]any{"version": 1, "leases": leases})
	must(t, err)
	must(t, os.WriteFile(leaseFile, data, 0o644))
	log := slog.New(slog.DiscardHandler)
	srv, err := dhcp.New(dhcp.Config{Interface: "cdt-none0", ServerIP: lanHead, Subnet: lanSubnet, Mode: m, LeaseFile: leaseFile, Logger: log})
	must(t, err)
	h := &Head{opts: Options{Subnet: lanSubnet, DHCP: m}, log: log, dhcp: srv, tracker: bootstage.NewTracker(),
		naming:  contract.Naming{Subnet: lanSubnet, Head: lanHead},
		cmdline: contract.Cmdline{Node: true, Head: lanHead, Token: "tok", Root: contract.RootShared}}
	return h
}

func TestAdmit(t *testing.T) {
	now := time.Now()
	mac := func(s string) net.HardwareAddr { hw, _ := net.ParseMAC(s); return hw }
	lease := func(m, ip string, expires time.Time) dhcp.Lease {
		return dhcp.Lease{MAC: m, IP: addr(ip), Expires: expires}
	}
	server := gateHead(t, dhcp.ModeServer,
		lease("52:54:00:00:00:05", "10.99.0.5", now.Add(time.Hour)),
		lease("52:54:00:00:00:06", "10.99.0.6", now.Add(-time.Minute)))
	proxy := gateHead(t, dhcp.ModeProxy)
	off := gateHead(t, dhcp.ModeOff)
	// Proxy mode: one machine only offered (no address known), one that
	// asked the other server for 10.99.0.77, one seen too long ago.
	proxy.seen.record("52:54:00:00:00:10", netip.Addr{}, dhcp.StageDHCPOffered, now)
	proxy.seen.record("52:54:00:00:00:11", netip.Addr{}, dhcp.StageDHCPOffered, now)
	proxy.seen.record("52:54:00:00:00:11", addr("10.99.0.77"), dhcp.StageDHCPRequested, now)
	proxy.seen.record("52:54:00:00:00:12", netip.Addr{}, dhcp.StageDHCPOffered, now.Add(-ScriptWindow-time.Second))
	// Server mode: a machine whose lease ran out, seen again just now.
	server.seen.record("52:54:00:00:00:07", addr("10.99.0.7"), dhcp.StageDHCPAcked, now)

	for _, tc := range []struct {
		name   string
		h      *Head
		mac    string
		remote string
		want   string // "" for a refusal
		reason string
	}{
		{"server: its lease, its address", server, "52:54:00:00:00:05", "10.99.0.5", "10.99.0.5", ""},
		{"server: its lease, another address", server, "52:54:00:00:00:05", "10.99.0.9", "", "DHCP gave that machine 10.99.0.5"},
		{"server: expired lease, no exchange", server, "52:54:00:00:00:06", "10.99.0.6", "", "without a DHCP exchange"},
		{"server: never did DHCP", server, "52:54:00:00:00:99", "10.99.0.99", "", "without a DHCP exchange"},
		{"server: seen just now", server, "52:54:00:00:00:07", "10.99.0.7", "10.99.0.7", ""},
		{"proxy: offered, address unknown", proxy, "52:54:00:00:00:10", "10.99.0.44", "10.99.0.44", ""},
		{"proxy: asked the other server for its address", proxy, "52:54:00:00:00:11", "10.99.0.77", "10.99.0.77", ""},
		{"proxy: another machine fetching its script", proxy, "52:54:00:00:00:11", "10.99.0.78", "", "DHCP gave that machine 10.99.0.77"},
		{"proxy: seen too long ago", proxy, "52:54:00:00:00:12", "10.99.0.12", "", "without a DHCP exchange"},
		{"proxy: off the cluster subnet", proxy, "52:54:00:00:00:10", "192.168.1.10", "", "outside the cluster subnet"},
		{"off: anyone on the subnet", off, "52:54:00:00:00:99", "10.99.0.99", "10.99.0.99", ""},
	} {
		got, err := tc.h.admit(mac(tc.mac), addr(tc.remote), now)
		switch {
		case tc.want != "" && (err != nil || got != addr(tc.want)):
			t.Errorf("%s: admit = %v, %v; want %s", tc.name, got, err, tc.want)
		case tc.want == "" && (!errors.Is(err, httpboot.ErrForbidden) || !strings.Contains(err.Error(), tc.reason)):
			t.Errorf("%s: admit = %v, %v; want ErrForbidden saying %q", tc.name, got, err, tc.reason)
		}
	}
}

// TestSeenRecord: an offer starts a new exchange and forgets the address of
// the last boot; the events after it keep the address they name.
func TestSeenRecord(t *testing.T) {
	var s dhcpSeen
	now := time.Now()
	s.record("m", addr("10.99.0.5"), dhcp.StageDHCPAcked, now)
	s.record("m", netip.Addr{}, dhcp.StageDHCPOffered, now) // proxy offer of a new boot
	if e, ok := s.lookup("m", now); !ok || e.ip.IsValid() {
		t.Errorf("after a new offer: %v, %v; want the exchange without an address", e, ok)
	}
	s.record("m", addr("10.99.0.6"), dhcp.StageDHCPRequested, now)
	s.record("m", netip.Addr{}, dhcp.StageDHCPAcked, now)
	if e, ok := s.lookup("m", now); !ok || e.ip != addr("10.99.0.6") {
		t.Errorf("after the request: %v, %v; want 10.99.0.6", e, ok)
	}
	if _, ok := s.lookup("m", now.Add(ScriptWindow+time.Second)); ok {
		t.Error("an exchange older than ScriptWindow still counts")
	}
}

// TestDHCPEventAdmits: the head's DHCP events are what admit looks at; a
// proxy-mode request to the other server tells the address without
// becoming a boot stage.
func TestDHCPEventAdmits(t *testing.T) {
	h := gateHead(t, dhcp.ModeProxy)
	hw, _ := net.ParseMAC("52:54:00:00:00:21")
	h.dhcpEvent(hw, netip.Addr{}, dhcp.StageDHCPOffered, "http://10.99.0.1/boot/52:54:00:00:00:21.ipxe (ipxe-script)")
	h.dhcpEvent(hw, addr("10.99.0.21"), dhcp.StageDHCPRequested, "from 10.99.0.250")
	if _, err := h.admit(hw, addr("10.99.0.22"), time.Now()); !errors.Is(err, httpboot.ErrForbidden) {
		t.Errorf("fetch from another address: %v, want ErrForbidden", err)
	}
	if got, err := h.admit(hw, addr("10.99.0.21"), time.Now()); err != nil || got != addr("10.99.0.21") {
		t.Errorf("fetch from its address: %v, %v", got, err)
	}
	for _, n := range h.tracker.Nodes() {
		for _, ev := range n.History {
			if ev.Stage == dhcp.StageDHCPRequested {
				t.Errorf("the request to the other server became a boot stage: %+v", n.History)
			}
		}
	}
}

// TestScriptNamesByLeaseWithBootIF: the script names the node after its
// lease and tells the kernel which card it booted from.
func TestScriptNamesByLeaseWithBootIF(t *testing.T) {
	h := gateHead(t, dhcp.ModeServer, dhcp.Lease{MAC: "52:54:00:00:00:2a", IP: addr("10.99.0.42"), Expires: time.Now().Add(time.Hour)})
	hw, _ := net.ParseMAC("52:54:00:00:00:2A")
	s, err := h.script(hw, netip.AddrFrom16(addr("10.99.0.42").As16())) // as a dual-stack listener reports it
	must(t, err)
	if !strings.Contains(s, "booting "+wantPrefix+"42 (52:54:00:00:00:2a)") || !strings.Contains(s, " BOOTIF=01-52-54-00-00-00-2a") {
		t.Errorf("script:\n%s", s)
	}
	if _, err := h.script(hw, addr("10.99.0.43")); !errors.Is(err, httpboot.ErrForbidden) {
		t.Errorf("script from another address: %v", err)
	}
}

// TestMissingLoaders: without iPXE's loaders, or the Secure Boot chain's
// in the boot folder, the head says which machines cannot boot and how to
// get them; with them it says nothing.
func TestMissingLoaders(t *testing.T) {
	var logged bytes.Buffer
	o := Options{StateDir: t.TempDir(), IPXEDir: filepath.Join(t.TempDir(), "missing"), BootDir: t.TempDir()}
	h := &Head{opts: o, log: slog.New(slog.NewTextHandler(&logged, nil))}
	h.warnMissingLoaders()
	for _, want := range []string{"level=WARN", "apt-get install ipxe", "BIOS PXE", "UEFI HTTP boot", "from its ROM", "missing=undionly.kpxe,snponly.efi",
		"UEFI PXE firmware", "clusterdebian build", "missing=shimx64.efi,grubx64.efi", "boot_dir=" + o.BootDir} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("warning lacks %q: %s", want, logged.String())
		}
	}
	logged.Reset()
	must(t, os.MkdirAll(filepath.Join(o.StateDir, contract.TFTPDir), 0o755))
	must(t, os.WriteFile(filepath.Join(o.StateDir, contract.TFTPDir, contract.BIOSBootFile), nil, 0o644))
	h.opts.IPXEDir = t.TempDir()
	must(t, os.WriteFile(filepath.Join(h.opts.IPXEDir, contract.UEFIBootFile), nil, 0o644))
	h.warnMissingLoaders()
	if strings.Contains(logged.String(), "ipxe") || !strings.Contains(logged.String(), "missing=shimx64.efi,grubx64.efi") {
		t.Errorf("with iPXE's loaders in place and no shim or GRUB, the head said: %s", logged.String())
	}
	logged.Reset()
	must(t, os.WriteFile(filepath.Join(o.BootDir, contract.UEFIPXEBootFile), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(o.BootDir, contract.GRUBNetFile), nil, 0o644))
	h.warnMissingLoaders()
	if logged.Len() != 0 {
		t.Errorf("warning with every loader in place: %s", logged.String())
	}
}
