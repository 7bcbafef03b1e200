package head

// Unit tests of the head's cluster network: the choice of interface among
// several, node1's address (configured, on the interface, leased from a
// LAN, or .1), the way out, the status and its summary, and what the head
// does about another DHCP server that shows up late. The fake System plays
// the machine and the fake DHCP client the LAN's server; TestHeadOnLAN and
// TestHeadWithUplink run the same against real ones in namespaces.

import (
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
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcpclient"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/uplink"
)

// lanServer is a LAN's DHCP server for the fake DHCP client: it offers
// addr (none: it does not answer), acks or naks.
type lanServer struct {
	server  string
	addr    string // with the mask's length
	router  string
	dns     []string
	nak     bool
	lease   time.Duration
	prefers []netip.Addr // what DISCOVERs asked for
}

func (s *lanServer) msg(t dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	p := netip.MustParsePrefix(s.addr)
	mods := []dhcpv4.Modifier{
		func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply },
		dhcpv4.WithMessageType(t),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(s.server))),
		dhcpv4.WithYourIP(p.Addr().AsSlice()),
		dhcpv4.WithNetmask(net.CIDRMask(p.Bits(), 32)),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(s.lease)),
	}
	if s.router != "" {
		mods = append(mods, dhcpv4.WithRouter(net.ParseIP(s.router)))
	}
	for _, d := range s.dns {
		mods = append(mods, dhcpv4.WithDNS(net.ParseIP(d)))
	}
	m, err := dhcpv4.New(mods...)
	if err != nil {
		panic(err)
	}
	return m
}

func (s *lanServer) Discover(_ context.Context, prefer netip.Addr) (*dhcpv4.DHCPv4, error) {
	s.prefers = append(s.prefers, prefer)
	if s.addr == "" {
		return nil, dhcpclient.ErrNoAnswer
	}
	return s.msg(dhcpv4.MessageTypeOffer), nil
}

func (s *lanServer) Request(context.Context, *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if s.nak {
		return s.msg(dhcpv4.MessageTypeNak), nil
	}
	return s.msg(dhcpv4.MessageTypeAck), nil
}

func (s *lanServer) Extend(context.Context, dhcpclient.Lease, bool) (*dhcpv4.DHCPv4, error) {
	return s.msg(dhcpv4.MessageTypeAck), nil
}

// netHead is a head with only what planNetwork needs, on a fake machine
// with one wired card eth0 (no address) and a LAN server that answers
// nothing.
func netHead(t *testing.T) (*Head, *fakeSystem, *lanServer) {
	t.Helper()
	root := t.TempDir()
	sys := newFakeSystem(root)
	sys.links = []Link{{Name: "lo", Up: true, Loopback: true, Carrier: true},
		{Name: "eth0", Index: 2, Up: true, Carrier: true, Ether: true, Physical: true, MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}}}
	sys.addrs["eth0"] = nil
	lan := &lanServer{server: "192.168.50.1", router: "192.168.50.254", dns: []string{"192.168.50.1"}, lease: 2 * time.Minute}
	sys.client = func(iface, hostname string) (dhcpclient.Exchanger, error) {
		if hostname != contract.HeadName {
			t.Errorf("DHCP client on %s as %s, want %s", iface, hostname, contract.HeadName)
		}
		return lan, nil
	}
	h := &Head{opts: Options{Subnet: lanSubnet, DHCP: dhcp.ModeAuto, NAT: uplink.ModeAuto, ClusterRoot: root},
		sys: sys, log: slog.New(slog.DiscardHandler)}
	return h, sys, lan
}

// natCalls returns the NAT rulesets the head loaded.
func natCalls(sys *fakeSystem) []string {
	var out []string
	for _, c := range sys.calls() {
		if strings.HasPrefix(c, "nat ") {
			out = append(out, c)
		}
	}
	return out
}

// withoutNAT returns the calls other than NAT.
func withoutNAT(sys *fakeSystem) []string {
	return slices.DeleteFunc(sys.calls(), func(c string) bool { return strings.HasPrefix(c, "nat ") })
}

// TestPlanPrivateSwitch: no DHCP server answers node1: it takes .1, the
// system's DHCP client let go of the card first, and the head runs auto
// mode there, publishing that .1 is its own.
func TestPlanPrivateSwitch(t *testing.T) {
	h, sys, lan := netHead(t)
	p, err := h.planNetwork(context.Background())
	must(t, err)
	if p.iface != "eth0" || p.addr != netip.MustParsePrefix("10.99.0.1/24") || p.source != srcDefault || p.mode != dhcp.ModeAuto {
		t.Errorf("plan %+v", p)
	}
	if want := []string{"release eth0", "link up eth0", "addr add eth0 10.99.0.1/24"}; !slices.Equal(withoutNAT(sys), want) {
		t.Errorf("calls %q, want %q", withoutNAT(sys), want)
	}
	if len(lan.prefers) != 1 {
		t.Errorf("%d DISCOVERs, want the one that finds no server", len(lan.prefers))
	}
	if got, _ := os.ReadFile(filepath.Join(h.opts.ClusterRoot, contract.RunDir, contract.InterfaceFile)); string(got) != "eth0\n" {
		t.Errorf("claim file %q", got)
	}

	// Started again this boot: .1 is the head's own (NetworkFile says
	// so), so the LAN is asked again, and .1 stays without a second add.
	h.plan = p
	h.publishNetwork(context.Background(), true)
	h2, _, _ := netHead(t)
	h2.opts.ClusterRoot, h2.sys, h2.log = h.opts.ClusterRoot, sys, h.log
	sys.recorded = nil
	p2, err := h2.planNetwork(context.Background())
	must(t, err)
	if p2.addr != p.addr || p2.source != srcDefault || !slices.Equal(p2.added, []netip.Prefix{p.addr}) {
		t.Errorf("after a restart: %+v", p2)
	}
	if want := []string{"release eth0", "link up eth0"}; !slices.Equal(withoutNAT(sys), want) {
		t.Errorf("calls after a restart %q, want %q", withoutNAT(sys), want)
	}
	if len(lan.prefers) != 2 {
		t.Errorf("the restarted head did not ask the LAN again")
	}
}

// TestPlanLAN: a LAN's DHCP server leases node1 an address: the LAN is the
// cluster network, proxy mode, the address has the lease's lifetime, and
// node1, which had no way out, gets the LAN's router and DNS servers. At a
// restart the head asks for the same address, and the .1 of an earlier
// start goes.
func TestPlanLAN(t *testing.T) {
	h, sys, lan := netHead(t)
	lan.addr = "192.168.50.37/23"
	p, err := h.planNetwork(context.Background())
	must(t, err)
	if p.addr != netip.MustParsePrefix("192.168.50.37/23") || p.source != srcLease || p.mode != dhcp.ModeProxy ||
		p.lease.Server != netip.MustParseAddr("192.168.50.1") || len(p.added) != 0 || p.nat.On() {
		t.Errorf("plan %+v", p)
	}
	want := []string{"release eth0", "link up eth0", "lease addr eth0 192.168.50.37/23",
		"route add default via 192.168.50.254 dev eth0", "resolvers [192.168.50.1]"}
	if got := withoutNAT(sys); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	conf, _ := os.ReadFile(filepath.Join(h.opts.ClusterRoot, "etc/resolv.conf"))
	if !strings.Contains(string(conf), "nameserver 192.168.50.1\n") || !strings.Contains(string(conf), "# Written by the clusterdebian head") {
		t.Errorf("resolv.conf:\n%s", conf)
	}

	// A restart, after an earlier start that had added .1 (the LAN's
	// server showed up late): .1 goes, the lease is asked for by address.
	h.plan = p
	h.net.lease = p.lease
	h.plan.added = []netip.Prefix{netip.MustParsePrefix("10.99.0.1/24")}
	h.publishNetwork(context.Background(), true)
	sys.addrs["eth0"] = append(sys.addrs["eth0"], IfAddr{Prefix: netip.MustParsePrefix("10.99.0.1/24")})
	sys.recorded = nil
	p2, err := h.planNetwork(context.Background())
	must(t, err)
	if p2.addr != p.addr || lan.prefers[1] != p.addr.Addr() {
		t.Errorf("restart: %+v, asked for %v", p2, lan.prefers)
	}
	if !slices.Contains(sys.calls(), "addr del eth0 10.99.0.1/24") || slices.Contains(sys.calls(), "route add default via 192.168.50.254 dev eth0") {
		t.Errorf("restart calls %q: want the old .1 removed, and no second default route", sys.calls())
	}
}

// TestPlanAdministrator: an address configured on purpose wins over the
// LAN: network.address (added by the head, which stops the system's DHCP
// client), or a permanent address on the card (left to the system).
func TestPlanAdministrator(t *testing.T) {
	h, sys, lan := netHead(t)
	lan.addr = "192.168.50.37/23"
	h.opts.Address = netip.MustParsePrefix("192.168.50.10/23")
	p, err := h.planNetwork(context.Background())
	must(t, err)
	if p.addr != h.opts.Address || p.source != srcConfigured || p.mode != dhcp.ModeAuto || len(lan.prefers) != 0 {
		t.Errorf("configured: %+v (DISCOVERs %d)", p, len(lan.prefers))
	}
	if want := []string{"release eth0", "link up eth0", "addr add eth0 192.168.50.10/23"}; !slices.Equal(withoutNAT(sys), want) {
		t.Errorf("calls %q, want %q", withoutNAT(sys), want)
	}

	h, sys, lan = netHead(t)
	lan.addr = "192.168.50.37/23"
	sys.addrs["eth0"] = []IfAddr{{Prefix: netip.MustParsePrefix("192.168.50.10/23")}}
	p, err = h.planNetwork(context.Background())
	must(t, err)
	if p.addr != netip.MustParsePrefix("192.168.50.10/23") || p.source != srcInterface || len(lan.prefers) != 0 {
		t.Errorf("on the card: %+v", p)
	}
	if want := []string{"link up eth0"}; !slices.Equal(withoutNAT(sys), want) {
		t.Errorf("calls %q, want %q", withoutNAT(sys), want)
	}
}

// TestPlanModes: server mode asks no LAN; proxy mode without a lease stays
// on .1 and warns; a server that answers with an unusable lease (a /31)
// makes the head hand out nothing.
func TestPlanModes(t *testing.T) {
	h, _, lan := netHead(t)
	h.opts.DHCP = dhcp.ModeServer
	lan.addr = "192.168.50.37/23"
	p, err := h.planNetwork(context.Background())
	must(t, err)
	if p.source != srcDefault || p.mode != dhcp.ModeServer || len(lan.prefers) != 0 {
		t.Errorf("server mode: %+v", p)
	}

	h, _, _ = netHead(t)
	h.opts.DHCP = dhcp.ModeProxy
	p, err = h.planNetwork(context.Background())
	must(t, err)
	if p.source != srcDefault || p.mode != dhcp.ModeProxy || !strings.Contains(p.warning, "network.address") {
		t.Errorf("proxy mode without a lease: %+v", p)
	}

	h, _, lan = netHead(t)
	lan.addr = "192.168.50.37/31"
	p, err = h.planNetwork(context.Background())
	must(t, err)
	if p.source != srcDefault || p.mode != dhcp.ModeProxy || !strings.Contains(p.warning, "too small") {
		t.Errorf("an unusable lease: %+v", p)
	}

	// A server that refuses its own offer is there all the same.
	h, _, lan = netHead(t)
	lan.addr, lan.nak = "192.168.50.37/23", true
	p, err = h.planNetwork(context.Background())
	must(t, err)
	if p.source != srcDefault || p.mode != dhcp.ModeProxy || !strings.Contains(p.warning, "refused") {
		t.Errorf("a NAK: %+v", p)
	}

	// Without a DHCP client nothing was learnt: auto mode's probe decides.
	h, sys, _ := netHead(t)
	sys.client = func(string, string) (dhcpclient.Exchanger, error) {
		return nil, errors.New("raw socket: operation not permitted")
	}
	p, err = h.planNetwork(context.Background())
	must(t, err)
	if p.source != srcDefault || p.mode != dhcp.ModeAuto || p.warning != "" {
		t.Errorf("no DHCP client: %+v", p)
	}
}

// TestPlanNAT: with an uplink and addresses of its own to hand out, node1
// is the nodes' router and gives them its upstream resolvers; network.nat
// = "on" without an uplink stops the head, naming why; a LAN needs none.
func TestPlanNAT(t *testing.T) {
	h, sys, _ := netHead(t)
	sys.routes = []uplink.Route{{Interface: "wlan0", Gateway: netip.MustParseAddr("192.168.1.1"), Metric: 600}}
	must(t, os.MkdirAll(filepath.Join(h.opts.ClusterRoot, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(h.opts.ClusterRoot, "etc/resolv.conf"), []byte("nameserver 127.0.0.53\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(h.opts.ClusterRoot, "run/systemd/resolve"), 0o755))
	must(t, os.WriteFile(filepath.Join(h.opts.ClusterRoot, "run/systemd/resolve/resolv.conf"), []byte("nameserver 192.168.1.1\nnameserver 127.0.0.1\n"), 0o644))
	p, err := h.planNetwork(context.Background())
	must(t, err)
	if p.nat.Out != "wlan0" || p.router != netip.MustParseAddr("10.99.0.1") || !slices.Equal(p.dns, []netip.Addr{netip.MustParseAddr("192.168.1.1")}) {
		t.Errorf("plan with an uplink: nat %+v router %v dns %v", p.nat, p.router, p.dns)
	}
	if got := natCalls(sys); len(got) != 1 || !strings.HasPrefix(got[0], "nat forward=true ") || !strings.Contains(got[0], `oifname "wlan0" ip saddr 10.99.0.0/24 masquerade`) {
		t.Errorf("NAT calls %q", got)
	}

	// A gateway configured for the default network is not handed out on
	// a LAN, which has its own.
	h, _, lan := netHead(t)
	lan.addr = "192.168.50.37/23"
	h.opts.Router, h.opts.DNS = netip.MustParseAddr("10.99.0.254"), []netip.Addr{netip.MustParseAddr("10.99.0.254")}
	p, err = h.planNetwork(context.Background())
	must(t, err)
	if p.router.IsValid() || p.dns != nil {
		t.Errorf("on a LAN: router %v, dns %v handed out", p.router, p.dns)
	}

	// The user's DNS servers win over node1's.
	h, sys, _ = netHead(t)
	sys.routes = []uplink.Route{{Interface: "wlan0"}}
	h.opts.DNS = []netip.Addr{netip.MustParseAddr("9.9.9.9")}
	p, err = h.planNetwork(context.Background())
	must(t, err)
	if !slices.Equal(p.dns, h.opts.DNS) {
		t.Errorf("configured DNS: %v", p.dns)
	}

	h, sys, _ = netHead(t)
	h.opts.NAT = uplink.ModeOn
	sys.routes = []uplink.Route{{Interface: "eth0", Gateway: netip.MustParseAddr("10.99.0.254")}}
	_, err = h.planNetwork(context.Background())
	var oe *inputerr.Error
	if !errors.As(err, &oe) || oe.Input != InputNAT || !strings.Contains(err.Error(), "cluster interface eth0") {
		t.Errorf("nat on without an uplink: %v, want an input error about NAT", err)
	}

	// On a LAN nothing is forwarded, and an old table goes.
	h, sys, lan = netHead(t)
	lan.addr = "192.168.50.37/23"
	sys.routes = []uplink.Route{{Interface: "wlan0"}}
	p, err = h.planNetwork(context.Background())
	must(t, err)
	if got := natCalls(sys); p.nat.On() || p.router.IsValid() || len(got) != 1 || !strings.HasPrefix(got[0], "nat forward=false add table ip clusterdebian\ndelete table") {
		t.Errorf("on a LAN: nat %+v, calls %q", p.nat, got)
	}
}

// TestChooseQuiet: among several connected cards, the cluster network is
// the only one where nobody else serves; otherwise the head refuses and
// says how to choose.
func TestChooseQuiet(t *testing.T) {
	lanF := ifaceFacts{name: "eth0", server: netip.MustParseAddr("192.168.1.1"), route: true}
	quiet := ifaceFacts{name: "eth1"}
	quiet2 := ifaceFacts{name: "eth2"}
	routeOnly := ifaceFacts{name: "eth3", route: true}
	failed := ifaceFacts{name: "eth4", probeErr: errors.New("raw socket: permission denied")}
	name, why, err := chooseQuiet([]ifaceFacts{lanF, quiet})
	if err != nil || name != "eth1" || !strings.Contains(why, "eth0: DHCP server 192.168.1.1, default route") {
		t.Errorf("chooseQuiet = %q, %q, %v", name, why, err)
	}
	for _, tc := range []struct {
		facts []ifaceFacts
		want  []string
	}{
		{[]ifaceFacts{quiet, quiet2}, []string{"look alike", "eth1: no DHCP server, no default route", "eth2", contract.ParamInterface, "network.interface"}},
		{[]ifaceFacts{lanF, routeOnly}, []string{"on each another DHCP server answers or a default route goes", "eth3: default route"}},
		{[]ifaceFacts{lanF, failed}, []string{"eth4: probe failed: raw socket"}},
	} {
		_, _, err := chooseQuiet(tc.facts)
		var oe *inputerr.Error
		if !errors.As(err, &oe) || oe.Input != InputInterface {
			t.Errorf("%v: %v, want an input error about Interface", tc.facts, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v lacks %q", tc.facts, err, w)
			}
		}
	}
}

// TestDetectAmongSeveral: node1 with a card on the LAN (a DHCP server, the
// default route) and one on the cluster switch starts on the second,
// without being told.
func TestDetectAmongSeveral(t *testing.T) {
	sys := newFakeSystem(t.TempDir())
	card := func(name string, index int) Link {
		return Link{Name: name, Index: index, Up: true, Carrier: true, Ether: true, Physical: true}
	}
	sys.links = []Link{{Name: "lo", Loopback: true, Up: true}, card("enp1s0", 2), card("enp2s0", 3)}
	sys.servers["enp1s0"] = netip.MustParseAddr("192.168.1.1")
	sys.routes = []uplink.Route{{Interface: "enp1s0", Gateway: netip.MustParseAddr("192.168.1.1")}}
	name, why, _, err := detectInterface(context.Background(), sys)
	if err != nil || name != "enp2s0" || !strings.Contains(why, "no other DHCP server") {
		t.Errorf("detectInterface = %q, %q, %v", name, why, err)
	}
	if calls := sys.calls(); !slices.Contains(calls, "probe enp1s0") || !slices.Contains(calls, "probe enp2s0") {
		t.Errorf("calls %q, want both cards probed", calls)
	}
	// Both quiet: the head refuses.
	sys.servers, sys.routes = map[string]netip.Addr{}, nil
	if _, _, _, err := detectInterface(context.Background(), sys); err == nil || !strings.Contains(err.Error(), "look alike") {
		t.Errorf("two quiet cards: %v", err)
	}
}

// TestResolveChoice: a choice by name, MAC or place among the wired cards
// in the kernel's order; wrong ones are refused naming the input.
func TestResolveChoice(t *testing.T) {
	mac := func(b byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 0, b} }
	links := []Link{
		{Name: "lo", Index: 1, Loopback: true},
		{Name: "enp3s0", Index: 4, Ether: true, Physical: true, MAC: mac(3)},
		{Name: "wlan0", Index: 2, Ether: true, Physical: true, Wireless: true, MAC: mac(9)},
		{Name: "enp1s0", Index: 3, Ether: true, Physical: true, MAC: mac(1), Slave: true},
		{Name: "br0", Index: 5, Ether: true, Bridge: true, MAC: mac(1)},
		{Name: "eno1", Index: 6, Ether: true, Physical: true, MAC: mac(6)},
	}
	for in, want := range map[string]string{
		"enp3s0": "enp3s0", "eth7": "eth7",
		"52:54:00:00:00:03": "enp3s0", "52:54:00:00:00:01": "br0",
		"2": "enp3s0", "3": "eno1",
	} {
		c, _ := contract.ParseInterfaceChoice(in)
		if got, err := resolveChoice(links, c, InputBootInterface); err != nil || got != want {
			t.Errorf("resolveChoice(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"4":                 "the 4th wired card does not exist: this machine has 3 wired cards (enp1s0 52:54:00:00:00:01, enp3s0 52:54:00:00:00:03, eno1",
		"1":                 "enp1s0, is part of a bridge or bond",
		"52:54:00:00:00:77": "no network interface has the MAC 52:54:00:00:00:77",
	} {
		c, _ := contract.ParseInterfaceChoice(in)
		_, err := resolveChoice(links, c, InputBootInterface)
		var oe *inputerr.Error
		if !errors.As(err, &oe) || oe.Input != InputBootInterface || !strings.Contains(err.Error(), want) {
			t.Errorf("resolveChoice(%s): %v, want an input error about BootInterface saying %q", in, err, want)
		}
	}
	// The boot menu's choice wins over cluster.toml's.
	h, sys, _ := netHead(t)
	sys.links = append(sys.links, Link{Name: "eth1", Index: 3, Up: true, Carrier: true, Ether: true, Physical: true})
	sys.addrs["eth1"] = nil
	h.opts.Interface, h.opts.BootInterface = "eth0", "2"
	p, err := h.planNetwork(context.Background())
	if err != nil || p.iface != "eth1" || !strings.Contains(p.ifaceWhy, "kernel command line") {
		t.Errorf("boot choice: %q (%s), %v", p.iface, p.ifaceWhy, err)
	}
}

// TestSummarize: the one line the banner and status show, for each way
// the head can be on its network.
func TestSummarize(t *testing.T) {
	p := func(addr string, src addrSource) netPlan {
		return netPlan{iface: "eth0", addr: netip.MustParsePrefix(addr), source: src}
	}
	lease := dhcpclient.Lease{Server: netip.MustParseAddr("192.168.50.1")}
	probe := dhcp.Evidence{Server: netip.MustParseAddr("192.168.50.1"), Kind: dhcp.EvidenceProbe}
	offer := dhcp.Evidence{Server: netip.MustParseAddr("10.55.0.1"), Kind: dhcp.EvidenceOffer, Client: "52:54:00:ee:00:01", Address: netip.MustParseAddr("10.55.0.120")}
	request := dhcp.Evidence{Server: netip.MustParseAddr("10.55.0.1"), Kind: dhcp.EvidenceRequest, Client: "52:54:00:ee:00:01", Address: netip.MustParseAddr("10.55.0.120")}
	withNAT := p("10.99.0.1/24", srcDefault)
	withNAT.nat = uplink.Plan{Out: "wlan0"}
	configured := p("192.168.50.10/23", srcConfigured)
	for _, tc := range []struct {
		name             string
		plan             netPlan
		configured, mode dhcp.Mode
		ev               []dhcp.Evidence
		stuck            string
		summary, warning string
	}{
		{"LAN", p("192.168.50.37/23", srcLease), dhcp.ModeAuto, dhcp.ModeProxy, nil, "",
			"proxyDHCP on 192.168.50.0/23 beside the DHCP server 192.168.50.1 (it answered node1 and leased it 192.168.50.37)", ""},
		{"private switch", p("10.99.0.1/24", srcDefault), dhcp.ModeAuto, dhcp.ModeServer, nil, "",
			"DHCP server on 10.99.0.0/24 (no other DHCP server answered node1)", ""},
		{"with an uplink", withNAT, dhcp.ModeAuto, dhcp.ModeServer, nil, "",
			"DHCP server on 10.99.0.0/24 (no other DHCP server answered node1); nodes reach the outside through node1 (NAT out of wlan0)", ""},
		{"deciding", p("10.99.0.1/24", srcDefault), dhcp.ModeAuto, dhcp.ModeProxy, nil, "",
			"deciding: node1 listens for another DHCP server on 10.99.0.0/24 before it hands out addresses", ""},
		{"a server seen late", p("10.99.0.1/24", srcDefault), dhcp.ModeAuto, dhcp.ModeProxy, []dhcp.Evidence{request}, "3 nodes run from node1",
			"proxyDHCP on 10.99.0.0/24: the DHCP server 10.55.0.1 hands out addresses on this network (52:54:00:ee:00:01 asked it for 10.55.0.120), so node1 hands out none", "3 nodes run from node1"},
		{"configured server beside another", p("10.99.0.1/24", srcDefault), dhcp.ModeServer, dhcp.ModeServer, []dhcp.Evidence{offer}, "",
			"DHCP server on 10.99.0.0/24 (network.dhcp = server)", "another DHCP server, 10.55.0.1, also hands out addresses here (seen offering 10.55.0.120 to 52:54:00:ee:00:01)"},
		{"configured proxy", configured, dhcp.ModeProxy, dhcp.ModeProxy, []dhcp.Evidence{probe}, "",
			"proxyDHCP on 192.168.50.0/23 (network.dhcp = proxy) beside the DHCP server 192.168.50.1 (it answered node1's probe); node1 is 192.168.50.10/23 (network.address)", ""},
		{"off", p("10.99.0.1/24", srcDefault), dhcp.ModeOff, dhcp.ModeOff, nil, "",
			"no DHCP on 10.99.0.0/24 (network.dhcp = off): another DHCP server must send the nodes to node1 at 10.99.0.1", ""},
	} {
		s, w := summarize(tc.plan, tc.configured, tc.mode, tc.ev, lease, tc.stuck)
		if s != tc.summary || !strings.HasPrefix(w, tc.warning) || (tc.warning == "") != (w == "") {
			t.Errorf("%s:\n got %q\n     %q\nwant %q\n     %q", tc.name, s, w, tc.summary, tc.warning)
		}
	}
}

// TestInUse: DHCP's check that an address is free asks the registry: an
// address a registered node holds is in use for any other MAC.
func TestInUse(t *testing.T) {
	h := &Head{}
	mac := func(s string) net.HardwareAddr { hw, _ := net.ParseMAC(s); return hw }
	if h.inUse(addr("10.99.0.5"), mac("52:54:00:00:00:05")) {
		t.Error("in use before the registry told anything")
	}
	h.setHolders([]registry.Node{
		{MAC: "52:54:00:00:00:01", IP: "10.99.0.1", Role: registry.RoleHead},
		{MAC: "52:54:00:00:00:05", IP: "10.99.0.5", Role: registry.RoleNode, State: registry.StateDown},
	})
	for _, tc := range []struct {
		ip, mac string
		want    bool
	}{
		{"10.99.0.5", "52:54:00:00:00:05", false},
		{"10.99.0.5", "52:54:00:00:00:99", true},
		{"10.99.0.6", "52:54:00:00:00:99", false},
		{"10.99.0.1", "52:54:00:00:00:99", false}, // the head's: dhcp never offers it anyway
	} {
		if got := h.inUse(addr(tc.ip), mac(tc.mac)); got != tc.want {
			t.Errorf("inUse(%s, %s) = %v", tc.ip, tc.mac, got)
		}
	}
}

// TestLateServer: another DHCP server showing up after the head started at
// .1 moves the cluster to its LAN when no node runs yet; with nodes
// running, or without a lease from it, or at an administrator's address,
// the head stays and says why.
func TestLateServer(t *testing.T) {
	ev := dhcp.Evidence{Server: netip.MustParseAddr("192.168.50.1"), Kind: dhcp.EvidenceRequest, Client: "52:54:00:ee:00:01"}
	newLate := func(t *testing.T, nodeUp bool) (*Head, *lanServer) {
		h, sys, lan := netHead(t)
		p, err := h.planNetwork(context.Background())
		must(t, err)
		h.plan, h.iface, h.addr = p, p.iface, p.addr.Addr()
		h.naming = contract.Naming{Subnet: p.subnet(), Head: h.addr}
		reg, err := registry.Open(filepath.Join(t.TempDir(), contract.RegistryFile), h.naming, time.Second, nil)
		must(t, err)
		t.Cleanup(func() { reg.Flush() })
		h.cluster = &cluster{reg: reg, mac: "52:54:00:00:00:01"}
		if nodeUp {
			_, err := reg.Register(registry.RegisterRequest{MAC: "52:54:00:00:00:07", IP: "10.99.0.7", Cores: 1})
			must(t, err)
		}
		_ = sys
		return h, lan
	}

	h, lan := newLate(t, false)
	lan.addr = "192.168.50.37/23"
	err := h.lateServer(context.Background(), ev)
	var mv *errMove
	if !errors.As(err, &mv) || mv.lease.Addr != netip.MustParsePrefix("192.168.50.37/23") || !strings.Contains(mv.why, "no node ran") {
		t.Fatalf("lateServer without nodes: %v, want a move to the LAN", err)
	}

	h, lan = newLate(t, true)
	lan.addr = "192.168.50.37/23"
	if err := h.lateServer(context.Background(), ev); err != nil || !strings.Contains(h.net.stuck, wantPrefix+"7") || !strings.Contains(h.net.stuck, "systemctl restart clusterdebian-head") {
		t.Errorf("lateServer with a node running: %v, stuck %q", err, h.net.stuck)
	}

	h, _ = newLate(t, false)
	if err := h.lateServer(context.Background(), ev); err != nil || !strings.Contains(h.net.stuck, "answer only machines it knows") || !strings.Contains(h.net.stuck, "52:54:00:00:00:01") {
		t.Errorf("lateServer without a lease: %v, stuck %q", err, h.net.stuck)
	}
	n := h.Network()
	if n.Warning != h.net.stuck {
		t.Errorf("status after a failed move: %+v", n)
	}
}

// TestKeepLeaseMoves: a lost lease is asked for again; when the LAN's
// server gives another address, the cluster moves.
func TestKeepLeaseMoves(t *testing.T) {
	h, sys, lan := netHead(t)
	lan.addr = "192.168.50.37/23"
	p, err := h.planNetwork(context.Background())
	must(t, err)
	h.plan, h.iface, h.addr, h.net.lease = p, p.iface, p.addr.Addr(), p.lease
	moving := &movingServer{lanServer: lan}
	sys.client = func(string, string) (dhcpclient.Exchanger, error) { return moving, nil }
	h.clock = &instantClock{now: time.Now()}
	err = h.keepLease(context.Background())
	var mv *errMove
	if !errors.As(err, &mv) || mv.lease.Addr != netip.MustParsePrefix("192.168.50.99/23") {
		t.Errorf("keepLease = %v, want a move to 192.168.50.99", err)
	}
}

// movingServer naks every renewal and then offers another address.
type movingServer struct{ *lanServer }

func (m *movingServer) Extend(context.Context, dhcpclient.Lease, bool) (*dhcpv4.DHCPv4, error) {
	m.addr = "192.168.50.99/23"
	return m.msg(dhcpv4.MessageTypeNak), nil
}

// instantClock runs the lease keeper's waits at once.
type instantClock struct{ now time.Time }

func (c *instantClock) Now() time.Time { return c.now }
func (c *instantClock) After(d time.Duration) <-chan time.Time {
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// TestNetworkFile: the status goes to RunDir as JSON that the banner and
// `clusterdebian status` read, and the banner is refreshed, on a machine
// whose root the head keeps.
func TestNetworkFile(t *testing.T) {
	h, sys, lan := netHead(t)
	lan.addr = "192.168.50.37/23"
	sys.root = h.opts.ClusterRoot
	p, err := h.planNetwork(context.Background())
	must(t, err)
	h.plan, h.net.lease = p, p.lease
	h.publishNetwork(context.Background(), false)
	data, err := os.ReadFile(filepath.Join(h.opts.ClusterRoot, contract.RunDir, contract.NetworkFile))
	must(t, err)
	var n registry.Network
	must(t, json.Unmarshal(data, &n))
	if n.Interface != "eth0" || n.Address != "192.168.50.37" || n.Subnet != "192.168.50.0/23" || n.AddressSource != "lease" ||
		n.Mode != "off" || n.Lease == nil || n.Lease.Server != "192.168.50.1" || !strings.HasPrefix(n.Summary, "proxyDHCP on 192.168.50.0/23") {
		t.Errorf("network file: %+v", n)
	}
	if !slices.Contains(sys.calls(), "banner") {
		t.Errorf("banner not refreshed: %q", sys.calls())
	}
	// Unchanged: not written again.
	sys.recorded = nil
	h.publishNetwork(context.Background(), false)
	if slices.Contains(sys.calls(), "banner") {
		t.Error("an unchanged status refreshed the banner")
	}
}

// A second card where a DHCP server answered node1's probe but whose lease
// (and default route) the system's DHCP client has not taken yet: planNAT
// waits for the route rather than decide "no uplink" (as under a loaded
// boot, where udev showed the card after the head started). With no route
// coming, it gives up after uplinkWait and says so in the plan.
func TestPlanNATWaitsForUplink(t *testing.T) {
	old := uplinkWait
	uplinkWait = 3 * time.Second
	t.Cleanup(func() { uplinkWait = old })
	for _, comes := range []bool{true, false} {
		h, sys, _ := netHead(t)
		p := netPlan{iface: "eth0", addr: netip.MustParsePrefix("10.99.0.1/24"), source: srcDefault, mode: dhcp.ModeServer,
			pendingUplinks: []string{"enp0s3"}}
		if comes {
			go func() {
				time.Sleep(time.Second)
				sys.AddDefaultRoute(context.Background(), "enp0s3", netip.MustParseAddr("172.30.0.1"))
			}()
		}
		start := time.Now()
		must(t, h.planNAT(context.Background(), &p))
		switch {
		case comes && (p.nat.Out != "enp0s3" || p.router != netip.MustParseAddr("10.99.0.1")):
			t.Errorf("the uplink's route came after %s: nat %+v, router %v; want NAT out of enp0s3", time.Since(start), p.nat, p.router)
		case !comes && p.nat.On():
			t.Errorf("no route came: nat %+v after %s; want no NAT", p.nat, time.Since(start))
		}
	}
}
