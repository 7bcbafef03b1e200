package dhcp

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// TestProxyReportsOtherServerRequest: beside another DHCP server, a PXE
// client's REQUEST for that server's offer is not answered but reported
// (StageDHCPRequested) with the address it asks for, which the head then
// holds the node's script fetch to; plain clients are not reported.
func TestProxyReportsOtherServerRequest(t *testing.T) {
	type event struct {
		mac   string
		ip    netip.Addr
		stage string
	}
	var mu sync.Mutex
	var events []event
	cfg := testConfig(t, ModeProxy)
	cfg.OnEvent = func(mac net.HardwareAddr, ip netip.Addr, stage, _ string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, event{mac.String(), ip, stage})
	}
	s := newTestServer(t, cfg)
	theirs := func(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		// The other server's OFFER; a reply, so that the REQUEST built
		// from it is a BOOTREQUEST (WithReply flips the opcode).
		offer := discover(mac, append(mods, dhcpv4.WithYourIP(net.ParseIP("10.99.0.120")),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.99.0.250"))))...)
		offer.OpCode = dhcpv4.OpcodeBootReply
		r := request(offer, mods...)
		if r.OpCode != dhcpv4.OpcodeBootRequest || r.MessageType() != dhcpv4.MessageTypeRequest {
			t.Fatalf("test REQUEST is %v %v", r.OpCode, r.MessageType())
		}
		return r
	}

	ipxe := mustMAC("52:54:00:00:05:01")
	mods := append(pxeMods("PXEClient:Arch:00000:UNDI:002001", iana.INTEL_X86PC), dhcpv4.WithUserClass("iPXE", false))
	if r, _ := roundTrip(t, s, theirs(ipxe, mods...), 67, peer67); r != nil {
		t.Errorf("proxy answered a REQUEST for the other server: %v", r)
	}
	plain := mustMAC("52:54:00:00:05:02")
	if r, _ := roundTrip(t, s, theirs(plain), 67, peer67); r != nil {
		t.Errorf("proxy answered a plain client's REQUEST: %v", r)
	}
	want := []event{{"52:54:00:00:05:01", netip.MustParseAddr("10.99.0.120"), StageDHCPRequested}}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(events, want) {
		t.Errorf("events %v, want %v", events, want)
	}
}
