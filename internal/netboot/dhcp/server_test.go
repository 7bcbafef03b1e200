package dhcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	testServerIP = netip.MustParseAddr("10.99.0.1")
	testSubnet   = netip.MustParsePrefix("10.99.0.0/24")
	testRouter   = netip.MustParseAddr("10.99.0.254")
	testDNS      = netip.MustParseAddr("10.99.0.1")
)

// tWriter sends log output to t.Log; after the test it drops it, because a
// late handler goroutine logging to a finished test would panic.
type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Short() || os.Getenv("DHCP_TEST_QUIET") != "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testConfig(t testing.TB, mode Mode) Config {
	return Config{
		Interface: "cdt-none0",
		ServerIP:  testServerIP,
		Subnet:    testSubnet,
		Mode:      mode,
		Router:    testRouter,
		DNS:       []netip.Addr{testDNS},
		Domain:    "cluster",
		LeaseTime: time.Hour,
		HTTPBase:  "http://10.99.0.1/",
		Logger:    testLogger(t),
	}
}

func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var peer67 = &net.UDPAddr{IP: net.IPv4bcast, Port: 68}

// roundTrip sends m through the wire path (bytes, parse, respond) and
// re-parses the reply from bytes, as a client would see it.
func roundTrip(t *testing.T, s *Server, m *dhcpv4.DHCPv4, port int, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	t.Helper()
	r, dest := s.handlePacket(m.ToBytes(), port, peer)
	if r == nil {
		return nil, dest
	}
	back, err := dhcpv4.FromBytes(r.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return back, dest
}

func discover(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		panic(err)
	}
	return d
}

func request(offer *dhcpv4.DHCPv4, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	r, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		panic(err)
	}
	return r
}

func pxeMods(vendor string, arch iana.Arch) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendor)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
	}
}

// dora runs DISCOVER/OFFER/REQUEST/ACK and returns the ACK.
func dora(t *testing.T, s *Server, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	offer, _ := roundTrip(t, s, discover(mac, mods...), 67, peer67)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no OFFER for %s: %v", mac, offer)
	}
	ack, _ := roundTrip(t, s, request(offer, mods...), 67, peer67)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("no ACK for %s: %v", mac, ack)
	}
	if !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("ACK %v differs from OFFER %v", ack.YourIPAddr, offer.YourIPAddr)
	}
	return ack
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "server": ModeServer, "proxy": ModeProxy, "off": ModeOff} {
		if got, err := ParseMode(in); got != want || err != nil {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"yes", "Auto", " server"} {
		if got, err := ParseMode(in); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("ParseMode(%q) = %q, %v; want an error naming the value", in, got, err)
		}
	}
}

func TestNewValidation(t *testing.T) {
	good := testConfig(t, ModeServer)
	bad := map[string]func(*Config){
		"mode":          func(c *Config) { c.Mode = "bogus" },
		"no iface":      func(c *Config) { c.Interface = "" },
		"no subnet":     func(c *Config) { c.Subnet = netip.Prefix{} },
		"v6 subnet":     func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") },
		"/31":           func(c *Config) { c.Subnet = netip.MustParsePrefix("10.99.0.0/31") },
		"/7":            func(c *Config) { c.Subnet = netip.MustParsePrefix("10.0.0.0/7") },
		"ip outside":    func(c *Config) { c.ServerIP = netip.MustParseAddr("10.98.0.1") },
		"ip is network": func(c *Config) { c.ServerIP = netip.MustParseAddr("10.99.0.0") },
		"ip broadcast":  func(c *Config) { c.ServerIP = netip.MustParseAddr("10.99.0.255") },
		"router":        func(c *Config) { c.Router = netip.MustParseAddr("192.168.1.1") },
		"dns v6":        func(c *Config) { c.DNS = []netip.Addr{netip.MustParseAddr("fd00::1")} },
		"lease short":   func(c *Config) { c.LeaseTime = time.Second },
	}
	for name, mut := range bad {
		c := good
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted a bad config", name)
		}
	}

	c := good
	c.Mode, c.Domain, c.LeaseTime, c.HTTPBase = "", "", 0, ""
	s := newTestServer(t, c)
	if s.cfg.Mode != ModeAuto || s.Mode() != ModeProxy {
		t.Errorf("empty mode: configured %q effective %q, want auto acting as proxy before its first probe", s.cfg.Mode, s.Mode())
	}
	if s.cfg.Domain != "cluster" || s.cfg.LeaseTime != 12*time.Hour || s.cfg.HTTPBase != "http://10.99.0.1" ||
		s.cfg.BootFiles.BIOS != "undionly.kpxe" || s.cfg.BootFiles.UEFI != "shimx64.efi" || s.cfg.BootFiles.UEFIHTTP != "snponly.efi" ||
		s.cfg.ProbeInterval != time.Minute || s.cfg.OfferDelay != time.Second || s.cfg.AddressCheck != 500*time.Millisecond {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
	if off := newTestServer(t, Config{Mode: ModeOff}); off.Mode() != ModeOff {
		t.Errorf("off server reports mode %q", off.Mode())
	}
}

func TestBootSelection(t *testing.T) {
	s := newTestServer(t, testConfig(t, ModeServer))
	mac := mustMAC("52:54:00:AB:CD:01")
	ipxeScript := "http://10.99.0.1/boot/52:54:00:ab:cd:01.ipxe"
	cases := []struct {
		name string
		mods []dhcpv4.Modifier
		want string // "" = no boot info
		vc   string // option 60 expected in the server-mode reply
	}{
		{"plain udhcpc", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("udhcp 1.35.0"))}, "", ""},
		{"no vendor class", nil, "", ""},
		{"bios", pxeMods("PXEClient:Arch:00000:UNDI:002001", iana.INTEL_X86PC), "undionly.kpxe", ""},
		{"bios without option 93", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient"))}, "undionly.kpxe", ""},
		{"uefi x64", pxeMods("PXEClient:Arch:00007:UNDI:003016", iana.EFI_X86_64), "shimx64.efi", ""},
		{"uefi bc", pxeMods("PXEClient:Arch:00009:UNDI:003016", iana.EFI_BC), "shimx64.efi", ""},
		{"uefi http", pxeMods("HTTPClient:Arch:00016:UNDI:003001", iana.EFI_X86_64_HTTP), "http://10.99.0.1/ipxe/snponly.efi", "HTTPClient"},
		{"arm64 unsupported", pxeMods("PXEClient:Arch:00011:UNDI:003016", iana.EFI_ARM64), "", ""},
		{"ipxe raw user class", append(pxeMods("PXEClient:Arch:00000:UNDI:002001", iana.INTEL_X86PC),
			dhcpv4.WithUserClass("iPXE", false)), ipxeScript, ""},
		{"ipxe rfc3004 user class", append(pxeMods("PXEClient:Arch:00007:UNDI:003016", iana.EFI_X86_64),
			dhcpv4.WithUserClass("iPXE", true)), ipxeScript, ""},
		{"ipxe arm64 still gets script", append(pxeMods("PXEClient:Arch:00011:UNDI:003016", iana.EFI_ARM64),
			dhcpv4.WithUserClass("iPXE", false)), ipxeScript, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			offer, _ := roundTrip(t, s, discover(mac, tc.mods...), 67, peer67)
			if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("no OFFER: %v", offer)
			}
			if isZero(offer.YourIPAddr) {
				t.Errorf("server mode OFFER without address")
			}
			if offer.BootFileName != tc.want || offer.BootFileNameOption() != tc.want {
				t.Errorf("boot file: header %q option %q, want %q", offer.BootFileName, offer.BootFileNameOption(), tc.want)
			}
			if got := offer.ClassIdentifier(); got != tc.vc {
				t.Errorf("option 60 %q, want %q", got, tc.vc)
			}
			if tc.want == "" {
				if !isZero(offer.ServerIPAddr) || offer.Options.Has(dhcpv4.OptionTFTPServerName) {
					t.Errorf("non-boot client got siaddr %v / option 66", offer.ServerIPAddr)
				}
				return
			}
			if !offer.ServerIPAddr.Equal(testServerIP.AsSlice()) {
				t.Errorf("siaddr %v, want %v", offer.ServerIPAddr, testServerIP)
			}
			tftp := !strings.HasPrefix(tc.want, "http")
			if got := offer.TFTPServerName(); tftp && got != "10.99.0.1" {
				t.Errorf("option 66 %q, want 10.99.0.1", got)
			}
		})
	}
}

func TestServerLeaseOptions(t *testing.T) {
	s := newTestServer(t, testConfig(t, ModeServer))
	var events []string
	var mu sync.Mutex
	s.cfg.OnEvent = func(mac net.HardwareAddr, ip netip.Addr, stage, detail string) {
		mu.Lock()
		events = append(events, mac.String()+" "+ip.String()+" "+stage)
		mu.Unlock()
	}
	mac := mustMAC("52:54:00:00:00:11")
	ack := dora(t, s, mac, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{1}, mac...))))
	ip := toAddr(ack.YourIPAddr)
	if ip != netip.MustParseAddr("10.99.0.2") {
		t.Errorf("first lease %v, want 10.99.0.2 (pool starts at .2)", ip)
	}
	if got := net.IP(ack.SubnetMask()).String(); got != "255.255.255.0" {
		t.Errorf("mask %s", got)
	}
	if r := ack.Router(); len(r) != 1 || !r[0].Equal(testRouter.AsSlice()) {
		t.Errorf("router %v", r)
	}
	if d := ack.DNS(); len(d) != 1 || !d[0].Equal(testDNS.AsSlice()) {
		t.Errorf("dns %v", d)
	}
	if h := ack.HostName(); h != "node2" {
		t.Errorf("hostname %q, want node2", h)
	}
	if d := ack.DomainName(); d != "cluster" {
		t.Errorf("domain %q", d)
	}
	if sid := ack.ServerIdentifier(); !sid.Equal(testServerIP.AsSlice()) {
		t.Errorf("server id %v", sid)
	}
	if lt := ack.IPAddressLeaseTime(0); lt != time.Hour {
		t.Errorf("lease time %v", lt)
	}
	if !bytes.Equal(ack.Options.Get(dhcpv4.OptionClientIdentifier), append([]byte{1}, mac...)) {
		t.Errorf("client identifier not echoed")
	}
	leases := s.Leases()
	if len(leases) != 1 || leases[0].MAC != "52:54:00:00:00:11" || leases[0].IP != ip || leases[0].Hostname != "node2" ||
		!leases[0].Expires.After(time.Now()) {
		t.Errorf("Leases() = %+v", leases)
	}
	mu.Lock()
	want := []string{"52:54:00:00:00:11 10.99.0.2 dhcp-offered", "52:54:00:00:00:11 10.99.0.2 dhcp-acked"}
	if strings.Join(events, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", events, want)
	}
	mu.Unlock()

	// Router and DNS addresses inside the subnet are never leased; .254 is
	// the router here, so a /24 pool has 252 addresses: .2-.253.
	s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := 0; i < 251; i++ {
		a := dora(t, s, net.HardwareAddr{0x52, 0x54, 0x01, 0, byte(i >> 8), byte(i)})
		got := toAddr(a.YourIPAddr)
		if got == testRouter || got == testServerIP || !testSubnet.Contains(got) {
			t.Fatalf("leased reserved/outside address %v", got)
		}
	}
	if offer, _ := roundTrip(t, s, discover(mustMAC("52:54:02:00:00:01")), 67, peer67); offer != nil {
		t.Errorf("full pool still offered %v", offer.YourIPAddr)
	}
}

func TestLeasePersistence(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, ModeServer)
	cfg.LeaseFile = filepath.Join(dir, "sub", "leases.json")
	s1 := newTestServer(t, cfg)
	macs := []net.HardwareAddr{mustMAC("52:54:00:00:01:01"), mustMAC("52:54:00:00:01:02"), mustMAC("52:54:00:00:01:03")}
	got := map[string]netip.Addr{}
	for _, m := range macs {
		got[m.String()] = toAddr(dora(t, s1, m).YourIPAddr)
	}
	// Release one: it must still come back to the same machine.
	rel, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithHwAddr(macs[2]),
		dhcpv4.WithClientIP(got[macs[2].String()].AsSlice()))
	if r, _ := roundTrip(t, s1, rel, 67, peer67); r != nil {
		t.Errorf("RELEASE answered")
	}

	data, err := os.ReadFile(cfg.LeaseFile)
	if err != nil {
		t.Fatal(err)
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil || len(lf.Leases) != 3 {
		t.Fatalf("lease file %s: %v %+v", data, err, lf)
	}
	if ents, _ := os.ReadDir(filepath.Dir(cfg.LeaseFile)); len(ents) != 1 {
		t.Errorf("temp files left beside the lease file: %v", ents)
	}

	// "Restart": a new server from the same file, and the clients come back
	// in reverse order without asking for any address.
	s2 := newTestServer(t, cfg)
	for i := len(macs) - 1; i >= 0; i-- {
		ip := toAddr(dora(t, s2, macs[i]).YourIPAddr)
		if ip != got[macs[i].String()] {
			t.Errorf("%s got %v after restart, had %v", macs[i], ip, got[macs[i].String()])
		}
	}
	fresh := toAddr(dora(t, s2, mustMAC("52:54:00:00:01:04")).YourIPAddr)
	for _, ip := range got {
		if ip == fresh {
			t.Errorf("new machine got an address already leased: %v", fresh)
		}
	}
}

func TestRequestStates(t *testing.T) {
	s := newTestServer(t, testConfig(t, ModeServer))
	a, b := mustMAC("52:54:00:00:02:01"), mustMAC("52:54:00:00:02:02")
	ackA := dora(t, s, a)
	ipA := toAddr(ackA.YourIPAddr)

	initReboot := func(mac net.HardwareAddr, ip string) *dhcpv4.DHCPv4 {
		m, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip))))
		return m
	}
	// B asks for A's address: NAK, broadcast.
	r, dest := roundTrip(t, s, initReboot(b, ipA.String()), 67, peer67)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeNak || !dest.IP.Equal(net.IPv4bcast) {
		t.Errorf("request for another client's address: %v to %v, want NAK broadcast", r, dest)
	}
	// An address from another network: NAK.
	if r, _ := roundTrip(t, s, initReboot(b, "192.168.1.50"), 67, peer67); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("foreign address: %v, want NAK", r)
	}
	// The server's own address: NAK.
	if r, _ := roundTrip(t, s, initReboot(b, "10.99.0.1"), 67, peer67); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("server address: %v, want NAK", r)
	}
	// A asks for a different address than its lease: NAK.
	if r, _ := roundTrip(t, s, initReboot(a, "10.99.0.77"), 67, peer67); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("client asking for another address than its lease: %v, want NAK", r)
	}
	// A reboots and asks for its own: ACK.
	if r, _ := roundTrip(t, s, initReboot(a, ipA.String()), 67, peer67); r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("init-reboot for own address: %v, want ACK", r)
	}
	// Unknown client in init-reboot asking for a free address (lease file
	// lost): we are the only server, so it keeps it.
	if r, _ := roundTrip(t, s, initReboot(b, "10.99.0.80"), 67, peer67); r == nil || r.MessageType() != dhcpv4.MessageTypeAck ||
		r.HostName() != "node80" {
		t.Errorf("init-reboot for free address: %v, want ACK node80", r)
	}

	// Renewal: ciaddr set, unicast back to it.
	renew, _ := dhcpv4.NewRenewFromAck(ackA)
	r, dest = roundTrip(t, s, renew, 67, &net.UDPAddr{IP: ipA.AsSlice(), Port: 68})
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || !dest.IP.Equal(ipA.AsSlice()) || dest.Port != 68 {
		t.Errorf("renew: %v to %v, want ACK unicast to %v", r, dest, ipA)
	}

	// SELECTING another server's offer: silence, and our offer is freed.
	c := mustMAC("52:54:00:00:02:03")
	offer, _ := roundTrip(t, s, discover(c), 67, peer67)
	other := request(offer, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.99.0.250"))))
	if r, _ := roundTrip(t, s, other, 67, peer67); r != nil {
		t.Errorf("answered a REQUEST for another server: %v", r)
	}
	if _, ok := s.pool.lookup(contract.MACString(c)); ok {
		t.Errorf("offer not forgotten after client chose another server")
	}

	// A configured server records the sighting but keeps serving.
	if ev := s.Evidence(); len(ev) != 1 || ev[0].Server != netip.MustParseAddr("10.99.0.250") || ev[0].Kind != EvidenceRequest ||
		ev[0].Client != contract.MACString(c) {
		t.Errorf("evidence %+v, want one REQUEST naming 10.99.0.250 from %s", ev, c)
	}
	if s.Mode() != ModeServer {
		t.Errorf("configured server turned %s", s.Mode())
	}
	dora(t, s, mustMAC("52:54:00:00:02:04"))

	// In auto mode the same sighting makes it a proxy for good (see
	// TestAutoSticky).
	cfg := testConfig(t, ModeAuto)
	cfg.OfferDelay = -1
	auto := newTestServer(t, cfg)
	auto.setMode(ModeServer)
	offer, _ = roundTrip(t, auto, discover(c), 67, peer67)
	roundTrip(t, auto, request(offer, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.99.0.250")))), 67, peer67)
	if auto.Mode() != ModeProxy || !auto.stickyProxy() {
		t.Errorf("auto mode after a client chose another server: mode %s sticky %v", auto.Mode(), auto.stickyProxy())
	}
}

func TestDeclineAndInform(t *testing.T) {
	s := newTestServer(t, testConfig(t, ModeServer))
	mac := mustMAC("52:54:00:00:03:01")
	ip := toAddr(dora(t, s, mac).YourIPAddr)
	dec, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(mac),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())))
	if r, _ := roundTrip(t, s, dec, 67, peer67); r != nil {
		t.Errorf("DECLINE answered")
	}
	again := toAddr(dora(t, s, mac).YourIPAddr)
	if again == ip {
		t.Errorf("declined address %v offered again", ip)
	}
	other := toAddr(dora(t, s, mustMAC("52:54:00:00:03:02")).YourIPAddr)
	if other == ip {
		t.Errorf("declined address %v given to another client", ip)
	}

	inf, _ := dhcpv4.NewInform(mac, again.AsSlice(),
		pxeMods("PXEClient:Arch:00000:UNDI:002001", iana.INTEL_X86PC)...)
	r, dest := roundTrip(t, s, inf, 67, &net.UDPAddr{IP: again.AsSlice(), Port: 68})
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("INFORM: %v", r)
	}
	if !isZero(r.YourIPAddr) || r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Errorf("INFORM ACK carries yiaddr %v or a lease time", r.YourIPAddr)
	}
	if !dest.IP.Equal(again.AsSlice()) || r.BootFileName != "undionly.kpxe" || r.HostName() != fmt.Sprintf("node%d", again.As4()[3]) {
		t.Errorf("INFORM ACK to %v file %q host %q", dest, r.BootFileName, r.HostName())
	}
}

func TestPoolReclaim(t *testing.T) {
	cfg := testConfig(t, ModeServer)
	cfg.Subnet = netip.MustParsePrefix("10.99.0.0/29") // hosts .1-.6; pool .2-.6 minus nothing else
	cfg.Router, cfg.DNS = netip.Addr{}, nil
	s := newTestServer(t, cfg)
	now := time.Now()
	s.pool.now = func() time.Time { return now }
	var ips []netip.Addr
	for i := range 5 {
		ips = append(ips, toAddr(dora(t, s, net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}).YourIPAddr))
	}
	if ips[0] != netip.MustParseAddr("10.99.0.2") || ips[4] != netip.MustParseAddr("10.99.0.6") {
		t.Fatalf("pool order %v", ips)
	}
	late := net.HardwareAddr{2, 0, 0, 0, 1, 0}
	if r, _ := roundTrip(t, s, discover(late), 67, peer67); r != nil {
		t.Fatalf("offered %v from a full pool of live leases", r.YourIPAddr)
	}
	// Once leases have run out, the oldest is reclaimed; the others stay
	// with their machines.
	now = now.Add(2 * time.Hour)
	if got := toAddr(dora(t, s, late).YourIPAddr); got != ips[0] {
		t.Errorf("reclaimed %v, want %v", got, ips[0])
	}
	if got := toAddr(dora(t, s, net.HardwareAddr{2, 0, 0, 0, 0, 3}).YourIPAddr); got != ips[3] {
		t.Errorf("expired lease not returned to its machine: %v, want %v", got, ips[3])
	}
}

func TestProxyReplies(t *testing.T) {
	s := newTestServer(t, testConfig(t, ModeProxy))
	mac := mustMAC("52:54:00:00:04:01")
	guid := append([]byte{0}, bytes.Repeat([]byte{0xab}, 16)...)
	mods := append(pxeMods("PXEClient:Arch:00000:UNDI:002001", iana.INTEL_X86PC),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid)))

	offer, dest := roundTrip(t, s, discover(mac, mods...), 67, peer67)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no proxy OFFER: %v", offer)
	}
	if !isZero(offer.YourIPAddr) || offer.Options.Has(dhcpv4.OptionIPAddressLeaseTime) ||
		offer.Options.Has(dhcpv4.OptionSubnetMask) || offer.Options.Has(dhcpv4.OptionRouter) {
		t.Errorf("proxy OFFER hands out network config: yiaddr %v %v", offer.YourIPAddr, offer.Options)
	}
	if offer.ClassIdentifier() != "PXEClient" {
		t.Errorf("option 60 %q", offer.ClassIdentifier())
	}
	if !offer.ServerIdentifier().Equal(testServerIP.AsSlice()) || !offer.ServerIPAddr.Equal(testServerIP.AsSlice()) {
		t.Errorf("server id %v siaddr %v", offer.ServerIdentifier(), offer.ServerIPAddr)
	}
	if offer.BootFileName != "undionly.kpxe" || offer.BootFileNameOption() != "undionly.kpxe" {
		t.Errorf("boot file %q / %q", offer.BootFileName, offer.BootFileNameOption())
	}
	if got := offer.Options.Get(dhcpv4.OptionVendorSpecificInformation); !bytes.Equal(got, []byte{6, 1, 8, 255}) {
		t.Errorf("option 43 % x", got)
	}
	if got := offer.Options.Get(dhcpv4.OptionClientMachineIdentifier); !bytes.Equal(got, guid) {
		t.Errorf("option 97 % x, want % x", got, guid)
	}
	if !dest.IP.Equal(net.IPv4bcast) || dest.Port != 68 {
		t.Errorf("proxy OFFER to %v", dest)
	}
	if len(s.Leases()) != 0 {
		t.Errorf("proxy mode recorded leases %v", s.Leases())
	}

	// Non-PXE clients get nothing, whatever they send.
	plain := mustMAC("52:54:00:00:04:02")
	for _, m := range []*dhcpv4.DHCPv4{discover(plain), request(discover(plain, dhcpv4.WithYourIP(net.ParseIP("10.99.0.120")),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.99.0.250")))))} {
		if r, _ := roundTrip(t, s, m, 67, peer67); r != nil {
			t.Errorf("proxy answered non-PXE %s: %v", m.MessageType(), r)
		}
	}
	// The PXE client's REQUEST to the real server is not ours either.
	theirs := discover(mac, append(mods, dhcpv4.WithYourIP(net.ParseIP("10.99.0.120")),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.99.0.250"))))...)
	if r, _ := roundTrip(t, s, request(theirs, mods...), 67, peer67); r != nil {
		t.Errorf("proxy answered a REQUEST for the other server: %v", r)
	}

	// Port 4011: REQUEST from the client's new address, boot item echoed.
	clientIP := net.ParseIP("10.99.0.120").To4()
	req4011, _ := dhcpv4.New(append(mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac),
		dhcpv4.WithClientIP(clientIP),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0x80, 0x00, 0x00, 0x00, 255})))...)
	peer := &net.UDPAddr{IP: clientIP, Port: 68}
	ack, dest := roundTrip(t, s, req4011, 4011, peer)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("no 4011 ACK: %v", ack)
	}
	if dest.String() != peer.String() {
		t.Errorf("4011 ACK to %v, want %v", dest, peer)
	}
	if !isZero(ack.YourIPAddr) || ack.BootFileName != "undionly.kpxe" || !ack.ServerIPAddr.Equal(testServerIP.AsSlice()) ||
		ack.ClassIdentifier() != "PXEClient" {
		t.Errorf("4011 ACK: yiaddr %v file %q siaddr %v vc %q", ack.YourIPAddr, ack.BootFileName, ack.ServerIPAddr, ack.ClassIdentifier())
	}
	if got := ack.Options.Get(dhcpv4.OptionVendorSpecificInformation); !bytes.Equal(got, []byte{6, 1, 8, 71, 4, 0x80, 0, 0, 0, 255}) {
		t.Errorf("4011 option 43 % x", got)
	}

	// UEFI HTTP boot and iPXE in proxy mode.
	httpOffer, _ := roundTrip(t, s, discover(mac, pxeMods("HTTPClient:Arch:00016:UNDI:003001", iana.EFI_X86_64_HTTP)...), 67, peer67)
	if httpOffer == nil || httpOffer.ClassIdentifier() != "HTTPClient" || httpOffer.BootFileName != "http://10.99.0.1/ipxe/snponly.efi" ||
		!isZero(httpOffer.YourIPAddr) {
		t.Errorf("HTTP boot proxy offer: %v", httpOffer)
	}
	ipxeOffer, _ := roundTrip(t, s, discover(mac, append(mods, dhcpv4.WithUserClass("iPXE", false))...), 67, peer67)
	if ipxeOffer == nil || ipxeOffer.BootFileName != "http://10.99.0.1/boot/52:54:00:00:04:01.ipxe" {
		t.Errorf("iPXE proxy offer: %v", ipxeOffer)
	}
	// A PXE client we have nothing for is left to others.
	if r, _ := roundTrip(t, s, discover(mac, pxeMods("PXEClient:Arch:00011:UNDI:003016", iana.EFI_ARM64)...), 67, peer67); r != nil {
		t.Errorf("proxy answered an arm64 client: %v", r)
	}
}

func TestIgnoredPackets(t *testing.T) {
	s := newTestServer(t, testConfig(t, ModeServer))
	mac := mustMAC("52:54:00:00:05:01")
	cases := map[string]*dhcpv4.DHCPv4{
		"reply opcode": func() *dhcpv4.DHCPv4 { d := discover(mac); d.OpCode = dhcpv4.OpcodeBootReply; return d }(),
		"relayed":      discover(mac, dhcpv4.WithRelay(net.ParseIP("10.1.0.1"))),
		"probe":        discover(mac, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(probeVendorClass))),
		"short chaddr": discover(net.HardwareAddr{1, 2, 3}),
		"no type":      func() *dhcpv4.DHCPv4 { d := discover(mac); d.Options.Del(dhcpv4.OptionDHCPMessageType); return d }(),
	}
	for name, m := range cases {
		if r, _ := roundTrip(t, s, m, 67, peer67); r != nil {
			t.Errorf("%s: answered %v", name, r)
		}
	}
	if r, _ := s.handlePacket([]byte("definitely not dhcp"), 67, peer67); r != nil {
		t.Errorf("garbage answered")
	}
}

func TestOffServes(t *testing.T) {
	s := newTestServer(t, Config{Mode: ModeOff, Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve in off mode did not return after cancel")
	}
	if s.Leases() != nil {
		t.Errorf("off server has leases")
	}
}

func TestFindSubOption(t *testing.T) {
	for _, b := range [][]byte{nil, {71}, {71, 9, 1}, {0, 0, 255, 71, 4, 1, 2, 3, 4}, {1, 200}} {
		if got := findSubOption(b, 71); got != nil {
			t.Errorf("findSubOption(% x) = % x, want nil", b, got)
		}
	}
	if got := findSubOption([]byte{0, 6, 1, 8, 71, 4, 1, 2, 3, 4, 255}, 71); !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Errorf("got % x", got)
	}
}
