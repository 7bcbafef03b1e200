package dhcp

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// probeVendorClass marked the probe DISCOVERs of earlier ClusterDebian
// heads, which probed from a made-up MAC; such probes are still not
// answered. Probes now come from the interface's own MAC, which is never
// answered either.
const probeVendorClass = "ClusterDebian-probe"

var broadcastDest = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}

// handlePacket parses raw and answers it as respond does. It is the entry
// point of the fuzz target; the live path gets the parsed packet from
// server4, which uses the same parser.
func (s *Server) handlePacket(raw []byte, port int, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	m, err := dhcpv4.FromBytes(raw)
	if err != nil {
		s.log.Debug("dhcp: malformed packet ignored", "from", peer, "err", err)
		return nil, nil
	}
	return s.respond(m, port, peer)
}

// respond decides the reply to request m that arrived on port (67 or 4011)
// from peer, and where to send it. A nil reply means stay silent.
func (s *Server) respond(m *dhcpv4.DHCPv4, port int, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	if m == nil || m.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, nil
	}
	mac := contract.MACString(m.ClientHWAddr)
	if m.HWType != iana.HWTypeEthernet || mac == "" {
		s.log.Debug("dhcp: ignoring non-Ethernet client", "htype", m.HWType, "chaddr", m.ClientHWAddr)
		return nil, nil
	}
	mt := m.MessageType()
	ci := classify(m)
	if ci.vendor == probeVendorClass || (s.ownMAC != nil && mac == contract.MACString(s.ownMAC)) {
		// Our own probe: the head never boots from itself.
		return nil, nil
	}
	if mt == dhcpv4.MessageTypeRequest && isZero(m.GatewayIPAddr) {
		// A client names the server whose offer it took; if that is not
		// us, another server hands out addresses here.
		if sid := toAddr(m.ServerIdentifier()); sid.IsValid() && !s.isOwn(sid) {
			s.noteForeign(Evidence{Server: sid, Kind: EvidenceRequest, Client: mac,
				Address: toAddr(m.RequestedIPAddress()), Time: time.Now()})
		}
	}
	mode := s.Mode()
	// Beside another DHCP server every client of that network passes by;
	// only the PXE clients we may answer are worth an info line then.
	level := slog.LevelInfo
	if mode == ModeProxy && !ci.pxe {
		level = slog.LevelDebug
	}
	s.log.Log(context.Background(), level, "dhcp request", "mac", mac, "type", mt.String(), "port", port, "xid", m.TransactionID.String(),
		"arch", ci.archString(), "vendor_class", ci.vendor, "user_class", strings.Join(ci.userClass, ","),
		"requested_ip", ipOrNone(m.RequestedIPAddress()), "ciaddr", ipOrNone(m.ClientIPAddr), "mode", mode)
	if !isZero(m.GatewayIPAddr) {
		// The cluster is one segment; a relayed request comes from another
		// network we have no pool for.
		s.ignore(mac, "relayed request (giaddr set)")
		return nil, nil
	}
	if port == pxePort {
		return s.respondPXE(m, mac, mt, ci, peer)
	}
	switch mode {
	case ModeServer:
		return s.respondServer(m, mac, mt, ci)
	case ModeProxy:
		return s.respondProxy(m, mac, mt, ci)
	}
	return nil, nil
}

// respondServer handles port 67 when we own the addresses.
func (s *Server) respondServer(m *dhcpv4.DHCPv4, mac string, mt dhcpv4.MessageType, ci clientInfo) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		start := time.Now()
		ip, err := s.offerAddress(m.ClientHWAddr, mac, toAddr(m.RequestedIPAddress()))
		if err != nil {
			s.log.Error("dhcp: no address to offer", "mac", mac, "err", err)
			return nil, nil
		}
		if s.cfg.Mode == ModeAuto && s.cfg.OfferDelay > 0 && !s.holdOffer(start) {
			// Another server answered meanwhile (or we are stopping): this
			// client is its client, and our address goes back to the pool.
			s.pool.forgetOffer(mac)
			s.withdrawn.Add(1)
			s.log.Info("dhcp: held OFFER not sent", "mac", mac, "ip", ip, "mode", s.Mode())
			return nil, nil
		}
		r := s.newReply(m, dhcpv4.MessageTypeOffer)
		r.YourIPAddr = ip.AsSlice()
		s.addLeaseOptions(r, ip, true)
		boot := s.addBoot(r, m, ci, false)
		return s.send(r, mac, ip, boot, StageDHCPOffered)

	case dhcpv4.MessageTypeRequest:
		sid := toAddr(m.ServerIdentifier())
		reqIP := toAddr(m.RequestedIPAddress())
		ciaddr := toAddr(m.ClientIPAddr)
		allowNew := true
		if sid.IsValid() {
			if sid != s.cfg.ServerIP {
				// SELECTING: the client took another server's offer (respond
				// has recorded the evidence); ours is free again.
				s.pool.forgetOffer(mac)
				return nil, nil
			}
			// SELECTING our own offer: it must still be reserved for it.
			allowNew = false
		}
		ip := reqIP
		if !ip.IsValid() {
			ip = ciaddr // RENEWING / REBINDING
		}
		if !ip.IsValid() {
			s.ignore(mac, "REQUEST without requested address or ciaddr")
			return nil, nil
		}
		if allowNew && s.pool.inPool(ip) {
			if _, known := s.pool.lookup(mac); !known {
				// A machine we have no record of (the lease file was lost)
				// wants to keep an address: only if nobody else holds it.
				if why, holder := s.addrTaken(ip, m.ClientHWAddr); why != "" {
					s.pool.setAside(mac, ip, conflictHold)
					s.log.Warn("dhcp: requested address in use", "mac", mac, "ip", ip, "reason", why, "holder", holder)
					allowNew = false
				}
			}
		}
		verdict, err := s.pool.confirm(mac, ip, s.cfg.LeaseTime, allowNew)
		switch {
		case verdict == unsaved:
			// The lease cannot be saved (persist logged why). No ACK: it
			// would promise an address that a restart forgets. No NAK
			// either: RFC 2131 3.1 asks for one when the address is not
			// the client's, which it is; a NAK would send it back to
			// DISCOVER at once, a storm, while silence has it retransmit
			// the REQUEST with backoff (RFC 2131 4.1), and a retry after
			// space is freed gets its ACK.
			s.log.Warn("dhcp: REQUEST not answered: lease cannot be saved", "mac", mac, "ip", ip, "err", err)
			return nil, nil
		case verdict == ack && err != nil:
			s.log.Warn("dhcp: renewal acknowledged, lease file keeps its earlier expiry", "mac", mac, "ip", ip, "err", err)
		}
		if verdict == nak {
			want, _ := s.pool.lookup(mac)
			s.log.Warn("dhcp: NAK", "mac", mac, "requested_ip", ip, "our_record", ipOrNone(want.AsSlice()))
			r := s.newReply(m, dhcpv4.MessageTypeNak)
			r.UpdateOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP.AsSlice()))
			r.UpdateOption(dhcpv4.OptMessage("requested address is not yours"))
			// RFC 2131 4.3.2: a NAK is broadcast, the client may have no
			// usable address.
			s.log.Info("dhcp reply", "mac", mac, "type", "NAK", "to", broadcastDest.String())
			return r, broadcastDest
		}
		r := s.newReply(m, dhcpv4.MessageTypeAck)
		r.ClientIPAddr = m.ClientIPAddr
		r.YourIPAddr = ip.AsSlice()
		s.addLeaseOptions(r, ip, true)
		boot := s.addBoot(r, m, ci, false)
		return s.send(r, mac, ip, boot, StageDHCPAcked)

	case dhcpv4.MessageTypeRelease:
		ip := toAddr(m.ClientIPAddr)
		if s.pool.release(mac, ip) {
			s.log.Info("dhcp release", "mac", mac, "ip", ip)
		} else {
			s.ignore(mac, "RELEASE of an address that is not its lease")
		}
		return nil, nil

	case dhcpv4.MessageTypeDecline:
		if sid := toAddr(m.ServerIdentifier()); sid.IsValid() && sid != s.cfg.ServerIP {
			s.ignore(mac, "DECLINE of another server's address")
			return nil, nil
		}
		ip := toAddr(m.RequestedIPAddress())
		if s.pool.decline(mac, ip) {
			s.log.Warn("dhcp decline: client found its address in use; taken out of the pool for a while",
				"mac", mac, "ip", ip, "for", declineHold.String())
		} else {
			s.ignore(mac, "DECLINE of an address that is not its lease")
		}
		return nil, nil

	case dhcpv4.MessageTypeInform:
		ciaddr := toAddr(m.ClientIPAddr)
		if !ciaddr.IsValid() || !s.cfg.Subnet.Contains(ciaddr) {
			s.ignore(mac, "INFORM from an address outside the subnet")
			return nil, nil
		}
		// RFC 2131 3.4: configuration only, no address and no lease time.
		r := s.newReply(m, dhcpv4.MessageTypeAck)
		r.ClientIPAddr = m.ClientIPAddr
		s.addLeaseOptions(r, ciaddr, false)
		boot := s.addBoot(r, m, ci, false)
		return s.send(r, mac, ciaddr, boot, StageDHCPAcked)
	}
	s.ignore(mac, "unhandled message type "+mt.String())
	return nil, nil
}

// respondProxy handles port 67 beside another DHCP server: PXE clients get an
// OFFER with boot information and no address; nobody else gets anything.
func (s *Server) respondProxy(m *dhcpv4.DHCPv4, mac string, mt dhcpv4.MessageType, ci clientInfo) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	var typ dhcpv4.MessageType
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		// Some firmware asks for the proxy offer itself on port 67 by
		// naming us as server; everything else is the other server's.
		if toAddr(m.ServerIdentifier()) != s.cfg.ServerIP {
			s.otherServerRequest(m, mac, ci)
			return nil, nil
		}
		if s.pool != nil && s.pool.pendingOffer(mac) {
			// Auto mode offered this client an address just before it
			// turned proxy. It hands out no address any more: a NAK sends
			// the client back to DISCOVER, where the other server answers.
			s.pool.forgetOffer(mac)
			r := s.newReply(m, dhcpv4.MessageTypeNak)
			r.UpdateOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP.AsSlice()))
			r.UpdateOption(dhcpv4.OptMessage("this server hands out no addresses on this segment"))
			s.log.Info("dhcp reply", "mac", mac, "type", "NAK", "to", broadcastDest.String(), "mode", ModeProxy,
				"reason", "offer withdrawn: another DHCP server serves this segment")
			return r, broadcastDest
		}
		typ = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	if !ci.pxe {
		s.log.Debug("dhcp: proxy mode ignores non-PXE client", "mac", mac)
		return nil, nil
	}
	r := s.newReply(m, typ)
	boot := s.addBoot(r, m, ci, true)
	if boot == "" {
		return nil, nil
	}
	stage := StageDHCPOffered
	if typ == dhcpv4.MessageTypeAck {
		stage = StageDHCPAcked
	}
	return s.send(r, mac, netip.Addr{}, boot, stage)
}

// otherServerRequest reports a PXE client's REQUEST for the other server's
// address (StageDHCPRequested), so that the head knows which address the
// node will fetch its boot script from. Other clients pass unreported.
func (s *Server) otherServerRequest(m *dhcpv4.DHCPv4, mac string, ci clientInfo) {
	ip := toAddr(m.RequestedIPAddress())
	hw, err := net.ParseMAC(mac)
	if !ci.pxe || !ip.IsValid() || err != nil {
		return
	}
	s.event(hw, ip, StageDHCPRequested, "from "+ipOrNone(m.ServerIdentifier()))
}

// respondPXE answers the boot-server REQUEST a PXE client sends to port 4011
// after a ProxyDHCP offer. The client has its address by then, so the ACK is
// unicast back to where the request came from.
func (s *Server) respondPXE(m *dhcpv4.DHCPv4, mac string, mt dhcpv4.MessageType, ci clientInfo, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	if mt != dhcpv4.MessageTypeRequest && mt != dhcpv4.MessageTypeInform {
		s.ignore(mac, "port 4011 expects REQUEST, got "+mt.String())
		return nil, nil
	}
	if !ci.pxe {
		s.ignore(mac, "port 4011 request from non-PXE client")
		return nil, nil
	}
	r := s.newReply(m, dhcpv4.MessageTypeAck)
	r.ClientIPAddr = m.ClientIPAddr
	boot := s.addBoot(r, m, ci, true)
	if boot == "" {
		return nil, nil
	}
	dest := peer
	if dest == nil || dest.IP == nil || dest.IP.IsUnspecified() {
		if c := toAddr(m.ClientIPAddr); c.IsValid() {
			dest = &net.UDPAddr{IP: c.AsSlice(), Port: dhcpv4.ClientPort}
		} else {
			dest = broadcastDest
		}
	}
	r2, _ := s.send(r, mac, toAddr(m.ClientIPAddr), boot, StageDHCPAcked)
	return r2, dest
}

// newReply starts a reply to req: same transaction, client and flags,
// addresses zero, the client identifier echoed (RFC 6842).
func (s *Server) newReply(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientHWAddr:  req.ClientHWAddr,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       dhcpv4.Options{},
	}
	r.UpdateOption(dhcpv4.OptMessageType(typ))
	if cid := req.Options.Get(dhcpv4.OptionClientIdentifier); cid != nil {
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, cid))
	}
	return r
}

// addLeaseOptions adds the network configuration for a client at ip.
func (s *Server) addLeaseOptions(r *dhcpv4.DHCPv4, ip netip.Addr, withLease bool) {
	r.UpdateOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP.AsSlice()))
	r.UpdateOption(dhcpv4.OptSubnetMask(s.mask))
	r.UpdateOption(dhcpv4.OptBroadcastAddress(s.bcast.AsSlice()))
	if s.cfg.Router.IsValid() {
		r.UpdateOption(dhcpv4.OptRouter(s.cfg.Router.AsSlice()))
	}
	if len(s.cfg.DNS) > 0 {
		ips := make([]net.IP, len(s.cfg.DNS))
		for i, d := range s.cfg.DNS {
			ips[i] = d.AsSlice()
		}
		r.UpdateOption(dhcpv4.OptDNS(ips...))
	}
	r.UpdateOption(dhcpv4.OptHostName(s.naming.MustName(ip)))
	r.UpdateOption(dhcpv4.OptDomainName(s.cfg.Domain))
	if withLease {
		lt := s.cfg.LeaseTime.Truncate(time.Second)
		r.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
		r.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))
		r.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8))
	}
}

// addBoot adds boot information for a PXE client and returns the boot file
// or URL ("" if none). Header fields siaddr and file are set as well as
// options 66/67 because old PXE ROMs read only the header. proxy adds what a
// ProxyDHCP reply needs: option 60, option 43 and the client's GUID.
func (s *Server) addBoot(r, req *dhcpv4.DHCPv4, ci clientInfo, proxy bool) string {
	bc, ok, reason := s.chooseBoot(req.ClientHWAddr, ci)
	if !ok {
		if ci.pxe {
			s.log.Warn("dhcp: PXE client gets no boot file", "mac", contract.MACString(req.ClientHWAddr), "reason", reason,
				"arch", ci.archString(), "vendor_class", ci.vendor)
		}
		return ""
	}
	r.ServerIPAddr = s.cfg.ServerIP.AsSlice()
	if len(bc.file) < bootFileField {
		r.BootFileName = bc.file
	} else {
		// A cut name would send the client after a file that does not
		// exist; clients that read option 67 still get the whole name.
		s.log.Warn("dhcp: boot file name too long for the BOOTP file field; sent in option 67 only",
			"mac", contract.MACString(req.ClientHWAddr), "file", bc.file, "max", bootFileField-1)
	}
	if bc.tftp {
		r.UpdateOption(optCString(dhcpv4.OptionTFTPServerName, s.cfg.ServerIP.String()))
	}
	r.UpdateOption(optCString(dhcpv4.OptionBootfileName, bc.file))
	if proxy || bc.vendorClass == vendorHTTP {
		// UEFI HTTP boot needs "HTTPClient" echoed in any case; a PXE
		// ROM needs "PXEClient" to recognise a ProxyDHCP offer. A full
		// server leaves it out for PXE ROMs so they take the plain
		// siaddr/file boot path instead of boot server discovery.
		r.UpdateOption(dhcpv4.OptClassIdentifier(bc.vendorClass))
	}
	if proxy {
		r.UpdateOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP.AsSlice()))
		if bc.vendorClass == vendorPXE {
			r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions(req)))
		}
		if ci.guid != nil {
			r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, ci.guid))
		}
	}
	return bc.file + " (" + bc.kind + ")"
}

// bootFileField is the size of the BOOTP header's file field (RFC 951),
// which holds a NUL-terminated name.
const bootFileField = 128

// optCString encodes a string option with a trailing NUL. RFC 2132 needs no
// NUL and tells receivers to strip one; but firmware that copies the option
// and reads it as a C string otherwise runs on into the next byte (some PXE
// ROMs then ask TFTP for "undionly.kpxe\xff", the end option being next).
// dnsmasq terminates these options for the same reason.
func optCString(code dhcpv4.OptionCode, v string) dhcpv4.Option {
	return dhcpv4.OptGeneric(code, append([]byte(v), 0))
}

// send logs the reply, reports the event and picks the destination: unicast
// to a client that already has an address, else broadcast on the cluster
// interface (an unconfigured client cannot answer ARP for a unicast reply).
func (s *Server) send(r *dhcpv4.DHCPv4, mac string, ip netip.Addr, boot, stage string) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	dest := broadcastDest
	if c := toAddr(r.ClientIPAddr); c.IsValid() && r.MessageType() != dhcpv4.MessageTypeNak {
		dest = &net.UDPAddr{IP: c.AsSlice(), Port: dhcpv4.ClientPort}
	}
	attrs := []any{"mac", mac, "type", r.MessageType().String(), "to", dest.String(), "mode", s.Mode()}
	if ip.IsValid() && !isZero(r.YourIPAddr) {
		attrs = append(attrs, "ip", ip, "hostname", s.naming.MustName(ip))
	}
	if boot != "" {
		attrs = append(attrs, "boot", boot)
	} else {
		attrs = append(attrs, "boot", "none")
	}
	s.log.Info("dhcp reply", attrs...)
	if hw, err := net.ParseMAC(mac); err == nil {
		s.event(hw, ip, stage, boot)
	}
	return r, dest
}

func (s *Server) ignore(mac, reason string) {
	s.log.Debug("dhcp: ignored", "mac", mac, "reason", reason)
}

// toAddr converts a packet address to netip, zero/absent/invalid as the
// zero Addr.
func toAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	a = a.Unmap()
	if !a.Is4() || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

func isZero(ip net.IP) bool { return !toAddr(ip).IsValid() }

func ipOrNone(ip net.IP) string {
	if a := toAddr(ip); a.IsValid() {
		return a.String()
	}
	return "none"
}
