package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// clientPortFilter accepts only unfragmented UDP datagrams to port 68. The
// client sockets are raw (so they work without an address and without
// competing for port 68 with a DHCP client on the head), and without this
// filter they would copy every IP packet of a busy cluster NIC.
var clientPortFilter = mustAssemble([]bpf.Instruction{
	// A cooked (SOCK_DGRAM) packet socket sees the IPv4 header at offset 0.
	bpf.LoadAbsolute{Off: 9, Size: 1},                                       // protocol
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 6},  //
	bpf.LoadAbsolute{Off: 6, Size: 2},                                       // flags + fragment offset
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 4},             // not the first fragment
	bpf.LoadMemShift{Off: 0},                                                // X = IP header length
	bpf.LoadIndirect{Off: 2, Size: 2},                                       // UDP destination port
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: dhcpv4.ClientPort, SkipTrue: 1}, //
	bpf.RetConstant{Val: 0xffff},                                            // accept
	bpf.RetConstant{Val: 0},                                                 // drop
})

func mustAssemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err) // a static program; fails only if edited wrongly
	}
	return raw
}

// openClientConn opens a raw DHCP-client socket on ifi: it sends broadcast
// frames from 0.0.0.0:68 and receives what arrives for port 68.
func openClientConn(ifi *net.Interface) (net.PacketConn, error) {
	raw, err := openRawClient(ifi)
	if err != nil {
		return nil, err
	}
	return nclient4.NewBroadcastUDPConn(raw, &net.UDPAddr{Port: dhcpv4.ClientPort}), nil
}

// openRawClient opens the filtered raw packet socket under openClientConn.
func openRawClient(ifi *net.Interface) (*packet.Conn, error) {
	return packet.Listen(ifi, packet.Datagram, unix.ETH_P_IP, &packet.Config{Filter: clientPortFilter})
}

// Probe sends a DHCPDISCOVER on iface from the interface's own MAC, as any
// machine on that LAN would (see the package doc), and reports whether
// another DHCP server answered within timeout, and its address. Offers from
// the interface's own addresses (our own server) and offers without an
// address (ProxyDHCP servers) do not count. A server that answers only
// machines it knows stays silent unless it knows this one; Server in auto
// mode watches live traffic for that reason. It needs root (a raw socket).
func Probe(ctx context.Context, iface string, timeout time.Duration) (found bool, server netip.Addr, err error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return false, netip.Addr{}, fmt.Errorf("dhcp probe: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return false, netip.Addr{}, fmt.Errorf("dhcp probe: %s has no Ethernet address", iface)
	}
	pc, err := openClientConn(ifi)
	if err != nil {
		return false, netip.Addr{}, fmt.Errorf("dhcp probe: raw socket on %s: %w", iface, err)
	}
	defer pc.Close()
	return probeOnce(ctx, pc, ifi.HardwareAddr, interfaceAddrs(ifi), timeout)
}

// newProbe builds a probe DISCOVER from mac. It asks for a broadcast reply,
// as PXE ROMs do, so the answer reaches us even from a server that would
// otherwise unicast to an address nobody answers ARP for yet. It carries no
// vendor class of ours: it should look like any machine's.
func newProbe(mac net.HardwareAddr) (*dhcpv4.DHCPv4, error) {
	return dhcpv4.NewDiscovery(mac, dhcpv4.WithBroadcast(true))
}

// probeOnce does one probe on an open client socket.
func probeOnce(ctx context.Context, pc net.PacketConn, mac net.HardwareAddr, exclude []netip.Addr, timeout time.Duration) (bool, netip.Addr, error) {
	discover, err := newProbe(mac)
	if err != nil {
		return false, netip.Addr{}, err
	}
	pkt := discover.ToBytes()
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	deadline := time.Now().Add(timeout)
	// Resend once a second: one lost frame must not hide a server.
	nextSend := time.Now()
	buf := make([]byte, 1500)
	for {
		if err := ctx.Err(); err != nil {
			return false, netip.Addr{}, err
		}
		now := time.Now()
		if !now.Before(deadline) {
			return false, netip.Addr{}, nil
		}
		if !now.Before(nextSend) {
			if _, err := pc.WriteTo(pkt, dest); err != nil {
				return false, netip.Addr{}, fmt.Errorf("dhcp probe: send: %w", err)
			}
			nextSend = now.Add(time.Second)
		}
		// Short reads so ctx cancellation and resends are noticed.
		wait := now.Add(250 * time.Millisecond)
		for _, t := range []time.Time{deadline, nextSend} {
			if t.Before(wait) {
				wait = t
			}
		}
		if err := pc.SetReadDeadline(wait); err != nil {
			return false, netip.Addr{}, err
		}
		n, from, err := pc.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return false, netip.Addr{}, fmt.Errorf("dhcp probe: receive: %w", err)
		}
		offer, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || offer.OpCode != dhcpv4.OpcodeBootReply ||
			offer.TransactionID != discover.TransactionID ||
			!bytes.Equal(offer.ClientHWAddr, mac) ||
			offer.MessageType() != dhcpv4.MessageTypeOffer ||
			isZero(offer.YourIPAddr) {
			continue
		}
		srv := toAddr(offer.ServerIdentifier())
		if !srv.IsValid() {
			if u, ok := from.(*net.UDPAddr); ok {
				srv = toAddr(u.IP)
			}
		}
		ours := false
		for _, a := range exclude {
			ours = ours || a == srv
		}
		if !ours {
			return true, srv, nil
		}
	}
}
