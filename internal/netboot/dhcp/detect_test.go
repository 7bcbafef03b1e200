package dhcp

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var otherServer = netip.MustParseAddr("10.55.0.1")

// reply builds a BOOTREPLY of type typ from server sid to mac.
func reply(typ dhcpv4.MessageType, sid netip.Addr, mac net.HardwareAddr, yiaddr string) *dhcpv4.DHCPv4 {
	mods := []dhcpv4.Modifier{dhcpv4.WithReply(discover(mac)), dhcpv4.WithMessageType(typ)}
	if sid.IsValid() {
		mods = append(mods, dhcpv4.WithServerIP(sid.AsSlice()), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid.AsSlice())))
	}
	if yiaddr != "" {
		mods = append(mods, dhcpv4.WithYourIP(net.ParseIP(yiaddr)))
	}
	m, err := dhcpv4.New(mods...)
	if err != nil {
		panic(err)
	}
	return m
}

func TestReplyEvidence(t *testing.T) {
	s := newTestServer(t, testConfig(t, ModeAuto))
	s.ownMAC = mustMAC("52:54:00:aa:00:01")
	s.ownAddrs = []netip.Addr{netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("192.168.1.7")}
	client := mustMAC("52:54:00:ee:00:01")
	cases := []struct {
		name string
		m    *dhcpv4.DHCPv4
		src  string
		want EvidenceKind // "" = no evidence
	}{
		{"offer", reply(dhcpv4.MessageTypeOffer, otherServer, client, "10.55.0.120"), "10.55.0.1", EvidenceOffer},
		{"ack", reply(dhcpv4.MessageTypeAck, otherServer, client, "10.55.0.120"), "10.55.0.1", EvidenceAck},
		{"nak", reply(dhcpv4.MessageTypeNak, otherServer, client, ""), "10.55.0.1", EvidenceNak},
		{"offer without option 54", reply(dhcpv4.MessageTypeOffer, netip.Addr{}, client, "10.55.0.120"), "10.55.0.1", EvidenceOffer},
		{"proxy offer (no address)", reply(dhcpv4.MessageTypeOffer, otherServer, client, ""), "10.55.0.1", ""},
		{"inform ack (no address)", reply(dhcpv4.MessageTypeAck, otherServer, client, ""), "10.55.0.1", ""},
		{"our own offer", reply(dhcpv4.MessageTypeOffer, testServerIP, client, "10.99.0.5"), "10.99.0.1", ""},
		{"from another of our addresses", reply(dhcpv4.MessageTypeOffer, netip.MustParseAddr("192.168.1.7"), client, "192.168.1.50"), "192.168.1.7", ""},
		{"request, not a reply", discover(client), "0.0.0.0", ""},
		{"no server address at all", reply(dhcpv4.MessageTypeOffer, netip.Addr{}, client, "10.55.0.120"), "0.0.0.0", ""},
	}
	for _, tc := range cases {
		ev, ok := s.replyEvidence(tc.m, toAddr(net.ParseIP(tc.src)))
		if ok != (tc.want != "") || (ok && (ev.Kind != tc.want || ev.Server != otherServer || ev.Client != contract.MACString(client))) {
			t.Errorf("%s: evidence %+v %v, want kind %q from %v", tc.name, ev, ok, tc.want, otherServer)
		}
	}
	// An OFFER to our own probe is the probe's answer.
	probe, _ := newProbe(s.ownMAC)
	s.probeXID.Store(probe.TransactionID)
	m := reply(dhcpv4.MessageTypeOffer, otherServer, s.ownMAC, "10.55.0.99")
	m.TransactionID = probe.TransactionID
	if ev, ok := s.replyEvidence(m, otherServer); !ok || ev.Kind != EvidenceProbe || ev.Address != netip.MustParseAddr("10.55.0.99") {
		t.Errorf("answer to the probe: %+v %v", ev, ok)
	}
	if probe.ClassIdentifier() != "" || !probe.IsBroadcast() || !bytes.Equal(probe.ClientHWAddr, s.ownMAC) {
		t.Errorf("probe: %s", probe.Summary())
	}
}

// TestAutoSticky: auto mode acting as server holds its OFFER; evidence of
// another server withdraws it and makes the server a proxy for good; a
// client that got an OFFER just before is NAKed when it asks for it; later
// evidence and probes change nothing.
func TestAutoSticky(t *testing.T) {
	cfg := testConfig(t, ModeAuto)
	cfg.OfferDelay = time.Hour // only evidence ends the hold in this test
	var seen []Evidence
	var mu sync.Mutex
	cfg.OnEvidence = func(e Evidence) { mu.Lock(); seen = append(seen, e); mu.Unlock() }
	s := newTestServer(t, cfg)
	s.setMode(ModeServer)
	known := mustMAC("52:54:00:ee:00:01")
	pxe := pxeMods("PXEClient:Arch:00000:UNDI:002001", iana.INTEL_X86PC)

	held := make(chan *dhcpv4.DHCPv4, 1)
	go func() {
		r, _ := s.handlePacket(discover(known, pxe...).ToBytes(), 67, peer67)
		held <- r
	}()
	waitFor(t, "the offer to be reserved", func() bool { return s.pool.pendingOffer(contract.MACString(known)) })
	select {
	case r := <-held:
		t.Fatalf("OFFER not held: %v", r)
	default:
	}

	// The other server's OFFER to the same client, as the watcher sees it.
	ev, ok := s.replyEvidence(reply(dhcpv4.MessageTypeOffer, otherServer, known, "10.55.0.120"), otherServer)
	if !ok {
		t.Fatal("no evidence from a foreign OFFER")
	}
	s.noteForeign(ev)
	if r := <-held; r != nil {
		t.Errorf("held OFFER sent after another server answered: %v", r.Summary())
	}
	if s.Mode() != ModeProxy || s.withdrawn.Load() != 1 || s.pool.pendingOffer(contract.MACString(known)) {
		t.Errorf("after evidence: mode %s, withdrawn %d, offer still reserved %v", s.Mode(), s.withdrawn.Load(),
			s.pool.pendingOffer(contract.MACString(known)))
	}
	evs := s.Evidence()
	if len(evs) != 1 || evs[0].Server != otherServer || evs[0].Kind != EvidenceOffer || evs[0].Address != netip.MustParseAddr("10.55.0.120") {
		t.Errorf("Evidence() = %+v", evs)
	}

	// A PXE client now gets boot information only.
	if r, _ := roundTrip(t, s, discover(mustMAC("52:54:00:ee:00:02"), pxe...), 67, peer67); r == nil || !isZero(r.YourIPAddr) {
		t.Errorf("sticky proxy answered a PXE DISCOVER with %v", r)
	}
	// A later "nobody answered" probe result cannot make it a server.
	if !s.stickyProxy() {
		t.Error("not sticky")
	}

	// A second server is recorded too; OnEvidence heard of both once.
	s.noteForeign(Evidence{Server: netip.MustParseAddr("10.55.0.2"), Kind: EvidenceNak})
	s.noteForeign(Evidence{Server: otherServer, Kind: EvidenceAck})
	if evs := s.Evidence(); len(evs) != 2 || evs[0].Kind != EvidenceOffer {
		t.Errorf("Evidence() = %+v", evs)
	}
	mu.Lock()
	if len(seen) != 2 {
		t.Errorf("OnEvidence called %d times, want 2: %+v", len(seen), seen)
	}
	mu.Unlock()
}

// TestAutoStickyNAK: a client that got our OFFER before the evidence came
// is NAKed when it asks for it, so it goes back to the other server.
func TestAutoStickyNAK(t *testing.T) {
	cfg := testConfig(t, ModeAuto)
	cfg.OfferDelay = -1
	s := newTestServer(t, cfg)
	s.setMode(ModeServer)
	mac := mustMAC("52:54:00:ee:00:03")
	offer, _ := roundTrip(t, s, discover(mac), 67, peer67)
	if offer == nil || isZero(offer.YourIPAddr) {
		t.Fatalf("no OFFER: %v", offer)
	}
	// Another client took another server's offer.
	roundTrip(t, s, request(reply(dhcpv4.MessageTypeOffer, otherServer, mustMAC("52:54:00:ee:00:04"), "10.55.0.121")), 67, peer67)
	if s.Mode() != ModeProxy {
		t.Fatalf("mode %s after a REQUEST naming another server", s.Mode())
	}
	r, dest := roundTrip(t, s, request(offer), 67, peer67)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeNak || !dest.IP.Equal(net.IPv4bcast) {
		t.Errorf("REQUEST for our withdrawn offer: %v to %v, want NAK broadcast", r, dest)
	}
	if len(s.Leases()) != 0 {
		t.Errorf("leases after going proxy: %v", s.Leases())
	}
	// The REQUEST was counted as evidence kind "request".
	if evs := s.Evidence(); len(evs) != 1 || evs[0].Kind != EvidenceRequest || evs[0].Server != otherServer {
		t.Errorf("Evidence() = %+v", evs)
	}
}
