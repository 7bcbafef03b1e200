package dhcp

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// fakeChecker says addresses in use answer ARP, as arpChecker would.
type fakeChecker struct {
	mu    sync.Mutex
	used  map[netip.Addr]net.HardwareAddr
	calls []netip.Addr
}

func (f *fakeChecker) inUse(_ context.Context, ip netip.Addr, client net.HardwareAddr) (bool, net.HardwareAddr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, ip)
	hw, ok := f.used[ip]
	if !ok || bytes.Equal(hw, client) {
		return false, nil
	}
	return true, hw
}

func (f *fakeChecker) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func TestAddressCheck(t *testing.T) {
	static := mustMAC("02:00:00:00:99:99")
	node := mustMAC("52:54:00:00:07:07")
	fc := &fakeChecker{used: map[netip.Addr]net.HardwareAddr{
		netip.MustParseAddr("10.99.0.2"): static,
		netip.MustParseAddr("10.99.0.3"): static,
		netip.MustParseAddr("10.99.0.9"): node, // the node itself
	}}
	cfg := testConfig(t, ModeServer)
	// The head's registry knows .4 as node's address.
	cfg.InUse = func(ip netip.Addr, mac net.HardwareAddr) bool {
		return ip == netip.MustParseAddr("10.99.0.4") && !bytes.Equal(mac, node)
	}
	s := newTestServer(t, cfg)
	s.arp = fc

	a := mustMAC("52:54:00:00:07:01")
	ackA := dora(t, s, a)
	if got := toAddr(ackA.YourIPAddr); got != netip.MustParseAddr("10.99.0.5") {
		t.Errorf("first lease %v, want 10.99.0.5 (.2 and .3 answer ARP, .4 is a known node's)", got)
	}
	// The addresses found in use are not tried again for the next client.
	calls := fc.count()
	b := mustMAC("52:54:00:00:07:02")
	if got := toAddr(dora(t, s, b).YourIPAddr); got != netip.MustParseAddr("10.99.0.6") || fc.count() != calls+1 {
		t.Errorf("second lease %v after %d more checks, want 10.99.0.6 after 1", got, fc.count()-calls)
	}
	// Renewing a running lease needs no check; a repeated DISCOVER within
	// the offer hold needs none either.
	calls = fc.count()
	renew, _ := dhcpv4.NewRenewFromAck(ackA)
	if r, _ := roundTrip(t, s, renew, 67, peer67); r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("renew: %v", r)
	}
	c := mustMAC("52:54:00:00:07:03")
	roundTrip(t, s, discover(c), 67, peer67)
	roundTrip(t, s, discover(c), 67, peer67)
	if fc.count() != calls+1 {
		t.Errorf("%d checks for a renewal and a repeated DISCOVER, want 1", fc.count()-calls)
	}
	// A client asking for an address in use gets another one.
	d := mustMAC("52:54:00:00:07:04")
	offer, _ := roundTrip(t, s, discover(d, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.2")))), 67, peer67)
	if offer == nil || toAddr(offer.YourIPAddr) == netip.MustParseAddr("10.99.0.2") {
		t.Errorf("offer for a requested address in use: %v", offer)
	}
	// The node the registry knows gets its own address back, and its own
	// ARP answers do not count against it (the lease file was lost).
	offer, _ = roundTrip(t, s, discover(node, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.99.0.9")))), 67, peer67)
	if offer == nil || toAddr(offer.YourIPAddr) != netip.MustParseAddr("10.99.0.9") {
		t.Errorf("node asking for its own address: %v", offer)
	}
	// A machine we have no lease for asks (INIT-REBOOT) for an address a
	// host answers ARP for, or the registry knows: NAK.
	for _, ip := range []string{"10.99.0.3", "10.99.0.4"} {
		m, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mustMAC("52:54:00:00:07:05")),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip))))
		if r, _ := roundTrip(t, s, m, 67, peer67); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
			t.Errorf("INIT-REBOOT for %s in use: %v, want NAK", ip, r)
		}
	}

	// A second address of the head's own interface is never offered.
	own := newTestServer(t, testConfig(t, ModeServer))
	own.ownAddrs = []netip.Addr{netip.MustParseAddr("10.99.0.2")}
	if got := toAddr(dora(t, own, a).YourIPAddr); got != netip.MustParseAddr("10.99.0.3") {
		t.Errorf("with the head also at .2, the first lease is %v, want 10.99.0.3", got)
	}

	// A pool where everything answers ARP: no offer, and the server says so.
	full := &fakeChecker{used: map[netip.Addr]net.HardwareAddr{}}
	for ip := netip.MustParseAddr("10.99.0.2"); testSubnet.Contains(ip); ip = ip.Next() {
		full.used[ip] = static
	}
	s2 := newTestServer(t, testConfig(t, ModeServer))
	s2.arp = full
	if r, _ := roundTrip(t, s2, discover(a), 67, peer67); r != nil {
		t.Errorf("offered %v where every address answers ARP", r.YourIPAddr)
	}
	if full.count() != maxOfferTries {
		t.Errorf("%d checks for one DISCOVER, want %d", full.count(), maxOfferTries)
	}
}

func TestDeclineOtherServer(t *testing.T) {
	s := newTestServer(t, testConfig(t, ModeServer))
	mac := mustMAC("52:54:00:00:03:09")
	ip := toAddr(dora(t, s, mac).YourIPAddr)
	dec, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(mac),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(otherServer.AsSlice())))
	roundTrip(t, s, dec, 67, peer67)
	if got := toAddr(dora(t, s, mac).YourIPAddr); got != ip {
		t.Errorf("a DECLINE sent to another server took our lease away: %v, had %v", got, ip)
	}
	dec.UpdateOption(dhcpv4.OptServerIdentifier(testServerIP.AsSlice()))
	roundTrip(t, s, dec, 67, peer67)
	if got := toAddr(dora(t, s, mac).YourIPAddr); got == ip {
		t.Errorf("declined address %v offered again", ip)
	}
}

// arpFrame builds an ARP packet as the packet socket delivers it.
func arpFrame(op uint16, sha net.HardwareAddr, spa, tpa string) []byte {
	b := probeFrame(sha, netip.MustParseAddr(tpa))
	b[7] = byte(op)
	s := netip.MustParseAddr(spa).As4()
	copy(b[14:18], s[:])
	return b
}

// nullConn drops writes and blocks reads until closed.
type nullConn struct {
	net.PacketConn
	mu     sync.Mutex
	writes [][]byte
	sent   chan struct{}
}

func (c *nullConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, append([]byte(nil), b...))
	c.mu.Unlock()
	select {
	case c.sent <- struct{}{}:
	default:
	}
	return len(b), nil
}

func TestARPChecker(t *testing.T) {
	own := mustMAC("52:54:00:aa:00:01")
	client := mustMAC("52:54:00:00:00:42")
	other := mustMAC("52:54:00:00:00:99")
	cases := []struct {
		name  string
		frame []byte
		used  bool
	}{
		{"reply from the holder", arpFrame(arpReply, other, "10.99.0.7", "0.0.0.0"), true},
		{"request from the holder", arpFrame(arpRequest, other, "10.99.0.7", "10.99.0.1"), true},
		{"another host probing for it", arpFrame(arpRequest, other, "0.0.0.0", "10.99.0.7"), true},
		{"the client itself", arpFrame(arpReply, client, "10.99.0.7", "0.0.0.0"), false},
		{"our own probe looped back", probeFrame(own, netip.MustParseAddr("10.99.0.7")), false},
		{"someone asking who has it", arpFrame(arpRequest, other, "10.99.0.3", "10.99.0.7"), false},
		{"about another address", arpFrame(arpReply, other, "10.99.0.8", "0.0.0.0"), false},
		{"garbage", []byte{1, 2, 3}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc := &nullConn{sent: make(chan struct{}, 4)}
			// A short wait: the cases that must find nothing wait it out.
			c := newARPChecker(nc, own, 200*time.Millisecond)
			go func() {
				<-nc.sent // the probe is out: answer it
				c.deliver(tc.frame)
			}()
			used, by := c.inUse(context.Background(), netip.MustParseAddr("10.99.0.7"), client)
			if used != tc.used || (used && !bytes.Equal(by, other)) {
				t.Errorf("inUse = %v %v, want %v", used, by, tc.used)
			}
			nc.mu.Lock()
			defer nc.mu.Unlock()
			want := probeFrame(own, netip.MustParseAddr("10.99.0.7"))
			if len(nc.writes) == 0 || !bytes.Equal(nc.writes[0], want) {
				t.Errorf("probe sent % x, want % x", nc.writes, want)
			}
			// RFC 5227 probe: sender IP 0.0.0.0, target MAC zero.
			if !bytes.Equal(want[14:18], []byte{0, 0, 0, 0}) || !bytes.Equal(want[18:24], make([]byte, 6)) {
				t.Errorf("probe frame % x is not an RFC 5227 probe", want)
			}
		})
	}
}
