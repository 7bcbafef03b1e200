package dhcp

import (
	"context"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// EvidenceKind says how another DHCP server showed itself.
type EvidenceKind string

// The kinds of Evidence.
const (
	// EvidenceProbe: it answered auto mode's probe DISCOVER.
	EvidenceProbe EvidenceKind = "probe-offer"
	// EvidenceOffer: an OFFER with an address from it was seen on the
	// segment (to any client).
	EvidenceOffer EvidenceKind = "offer"
	// EvidenceAck: an ACK with an address from it was seen.
	EvidenceAck EvidenceKind = "ack"
	// EvidenceNak: a NAK from it was seen: it claims the segment's
	// addresses.
	EvidenceNak EvidenceKind = "nak"
	// EvidenceRequest: a client's REQUEST named it as the server whose
	// offer it took.
	EvidenceRequest EvidenceKind = "request"
)

// Evidence is the first sign seen of another DHCP server on the segment.
type Evidence struct {
	// Server is the other server's identifier (option 54), or the source
	// address of its reply when that option is missing.
	Server netip.Addr
	// Kind is what was seen.
	Kind EvidenceKind
	// Client is the MAC of the client involved (the head's own MAC for a
	// probe), lower-case colon hex.
	Client string
	// Address is the address the other server offered or acked, if any.
	Address netip.Addr
	// Time is when it was seen.
	Time time.Time
}

// readRetry is the pause after a failed read on a raw socket before the
// next try.
const readRetry = 100 * time.Millisecond

// maxEvidence bounds how many distinct other servers are remembered, so
// forged replies cannot grow memory without end.
const maxEvidence = 16

// Evidence returns the first sighting of each other DHCP server seen on the
// segment since Serve started, oldest first; nil if none was seen. In auto
// mode the first entry is why the server runs as ProxyDHCP.
func (s *Server) Evidence() []Evidence {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	if len(s.evidence) == 0 {
		return nil
	}
	out := make([]Evidence, 0, len(s.evidence))
	for _, e := range s.evidence {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// isOwn reports whether a is one of our own addresses: the server address
// or an address of the interface when Serve started.
func (s *Server) isOwn(a netip.Addr) bool {
	if a == s.cfg.ServerIP {
		return true
	}
	for _, o := range s.ownAddrs {
		if o == a {
			return true
		}
	}
	return false
}

// noteForeign records evidence of another DHCP server. In auto mode the
// first evidence makes the server a ProxyDHCP server for the rest of its
// life: whatever answered once may answer again, and a second server that
// hands out addresses on a segment is the one failure that must never
// happen. A configured server keeps serving (the administrator said so) but
// warns.
func (s *Server) noteForeign(ev Evidence) {
	if !ev.Server.IsValid() || s.isOwn(ev.Server) {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	s.evMu.Lock()
	_, known := s.evidence[ev.Server]
	stored := false
	if !known && len(s.evidence) < maxEvidence {
		s.evidence[ev.Server] = ev
		stored = true
	}
	becameProxy := false
	if s.cfg.Mode == ModeAuto && !s.sticky {
		s.sticky = true
		becameProxy = true
		s.setMode(ModeProxy)
		close(s.stickyc)
	}
	s.evMu.Unlock()

	if !stored && !becameProxy {
		return
	}
	attrs := []any{"other_server", ev.Server, "evidence", string(ev.Kind), "client", ev.Client, "iface", s.cfg.Interface}
	if ev.Address.IsValid() {
		attrs = append(attrs, "address", ev.Address)
	}
	switch {
	case becameProxy:
		s.log.Warn("auto mode: another DHCP server hands out addresses on this segment; "+
			"running as ProxyDHCP (boot information only, no addresses) until the head restarts", attrs...)
	case s.cfg.Mode == ModeServer:
		s.log.Warn("another DHCP server hands out addresses on this segment; still serving addresses because "+
			"dhcp mode is server: clients may get conflicting offers", attrs...)
	default:
		s.log.Info("another DHCP server on this segment", attrs...)
	}
	if s.cfg.OnEvidence != nil {
		s.cfg.OnEvidence(ev)
	}
}

// stickyProxy reports whether auto mode has seen another server and is a
// ProxyDHCP server for good.
func (s *Server) stickyProxy() bool {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	return s.sticky
}

// watch reads every DHCP reply that crosses the segment on the raw client
// socket pc (port 68, the client side) until ctx is done, and records other
// servers' OFFERs, ACKs and NAKs as evidence. Broadcast replies are seen
// whoever the client is; unicast ones only when addressed to this host,
// which is why the probe uses the interface's own MAC.
func (s *Server) watch(ctx context.Context, pc net.PacketConn) {
	buf := make([]byte, 4096)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			// Serve closes the socket only after cancelling ctx. Anything
			// else (the interface going down, say) may pass: try again,
			// without spinning.
			if ctx.Err() != nil {
				return
			}
			s.log.Debug("dhcp watch: receive", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(readRetry):
			}
			continue
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			continue
		}
		var src netip.Addr
		if u, ok := from.(*net.UDPAddr); ok {
			src = toAddr(u.IP)
		}
		if ev, ok := s.replyEvidence(m, src); ok {
			s.noteForeign(ev)
		}
	}
}

// replyEvidence decides whether the BOOTREPLY m, sent from src, shows
// another DHCP server: an OFFER or ACK that hands out an address, or a NAK,
// from a server that is not us. ProxyDHCP replies (no address) are not
// evidence: they hand out nothing.
func (s *Server) replyEvidence(m *dhcpv4.DHCPv4, src netip.Addr) (Evidence, bool) {
	if m.OpCode != dhcpv4.OpcodeBootReply {
		return Evidence{}, false
	}
	var kind EvidenceKind
	switch m.MessageType() {
	case dhcpv4.MessageTypeOffer:
		kind = EvidenceOffer
	case dhcpv4.MessageTypeAck:
		kind = EvidenceAck
	case dhcpv4.MessageTypeNak:
		kind = EvidenceNak
	default:
		return Evidence{}, false
	}
	yi := toAddr(m.YourIPAddr)
	if kind != EvidenceNak && !yi.IsValid() {
		return Evidence{}, false
	}
	srv := toAddr(m.ServerIdentifier())
	if !srv.IsValid() {
		srv = src
	}
	if !srv.IsValid() || s.isOwn(srv) {
		return Evidence{}, false
	}
	mac := contract.MACString(m.ClientHWAddr)
	if kind == EvidenceOffer && s.isProbe(m) {
		kind = EvidenceProbe
	}
	return Evidence{Server: srv, Kind: kind, Client: mac, Address: yi, Time: time.Now()}, true
}

// isProbe reports whether reply m answers our own probe.
func (s *Server) isProbe(m *dhcpv4.DHCPv4) bool {
	xid, ok := s.probeXID.Load().(dhcpv4.TransactionID)
	return ok && m.TransactionID == xid && s.ownMAC != nil && contract.MACString(m.ClientHWAddr) == contract.MACString(s.ownMAC)
}
