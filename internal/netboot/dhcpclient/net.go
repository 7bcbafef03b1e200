package dhcpclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Defaults of Open: each exchange sends up to Tries times, waiting
// FirstWait for an answer, then twice as long each time (1+2+4 s: a server
// that checks an address with a ping before offering it answers within
// two or three seconds).
const (
	FirstWait = time.Second
	Tries     = 3
)

// netExchanger is the real Exchanger: each exchange opens a raw packet
// socket on the interface for its own duration.
type netExchanger struct {
	iface    string
	hw       net.HardwareAddr
	hostname string
	wait     time.Duration
	tries    int
}

// Open returns an Exchanger on iface that sends from the interface's own
// MAC and names the machine hostname (option 12). It needs root (raw
// sockets), and no address on iface.
func Open(iface, hostname string) (Exchanger, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("%s has no Ethernet address", iface)
	}
	return &netExchanger{iface: iface, hw: ifi.HardwareAddr, hostname: hostname, wait: FirstWait, tries: Tries}, nil
}

// options are what every message of ours carries: our name, and the
// options we want to hear about.
func (e *netExchanger) options() []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionDomainName, dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue),
	}
	if e.hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(e.hostname)))
	}
	return mods
}

// client opens an nclient4 client whose socket sends from src (the
// unspecified address before the machine has a lease) and receives every
// DHCP reply to port 68 for our MAC, broadcast or unicast: servers answer
// a renewal at the leased address, some answer a DISCOVER at the offered
// one, and others broadcast.
func (e *netExchanger) client(src netip.Addr, server *net.UDPAddr) (*nclient4.Client, error) {
	ifi, err := net.InterfaceByName(e.iface)
	if err != nil {
		return nil, err
	}
	raw, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_IP, nil)
	if err != nil {
		return nil, fmt.Errorf("raw socket on %s: %w", e.iface, err)
	}
	bound := &net.UDPAddr{Port: dhcpv4.ClientPort}
	conn := &splitConn{
		PacketConn: nclient4.NewBroadcastUDPConn(raw, bound),
		raw:        raw,
		w:          nclient4.NewBroadcastUDPConn(raw, &net.UDPAddr{IP: src.AsSlice(), Port: dhcpv4.ClientPort}),
	}
	opts := []nclient4.ClientOpt{nclient4.WithTimeout(e.wait), nclient4.WithRetry(e.tries)}
	if server != nil {
		opts = append(opts, nclient4.WithServerAddr(server))
	}
	c, err := nclient4.NewWithConn(conn, e.hw, opts...)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// splitConn reads like one BroadcastRawUDPConn (any destination address)
// and writes like another (with our source address).
type splitConn struct {
	net.PacketConn
	raw net.PacketConn
	w   net.PacketConn
}

func (c *splitConn) WriteTo(b []byte, addr net.Addr) (int, error) { return c.w.WriteTo(b, addr) }
func (c *splitConn) Close() error                                 { return c.raw.Close() }

// exchange sends m and waits for a reply that match accepts.
func (e *netExchanger) exchange(ctx context.Context, src netip.Addr, dest *net.UDPAddr, m *dhcpv4.DHCPv4, match nclient4.Matcher) (*dhcpv4.DHCPv4, error) {
	c, err := e.client(src, dest)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	reply, err := c.SendAndRead(ctx, c.RemoteAddr(), m, match)
	if errors.Is(err, nclient4.ErrNoResponse) {
		return nil, ErrNoAnswer
	}
	return reply, err
}

var broadcast = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}

func (e *netExchanger) Discover(ctx context.Context, prefer netip.Addr) (*dhcpv4.DHCPv4, error) {
	mods := e.options()
	if prefer.Is4() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(prefer.AsSlice())))
	}
	m, err := dhcpv4.NewDiscovery(e.hw, mods...)
	if err != nil {
		return nil, err
	}
	// An OFFER without an address is a ProxyDHCP server's: not a lease.
	return e.exchange(ctx, netip.IPv4Unspecified(), broadcast, m, func(r *dhcpv4.DHCPv4) bool {
		return r.MessageType() == dhcpv4.MessageTypeOffer && toAddr(r.YourIPAddr).IsValid() && toAddr(r.ServerIdentifier()).IsValid()
	})
}

func (e *netExchanger) Request(ctx context.Context, offer *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	m, err := dhcpv4.NewRequestFromOffer(offer, e.options()...)
	if err != nil {
		return nil, err
	}
	// SELECTING: a fresh transaction, not the offer's.
	if err := newTransaction(m); err != nil {
		return nil, err
	}
	server := offer.ServerIdentifier()
	return e.exchange(ctx, netip.IPv4Unspecified(), broadcast, m, func(r *dhcpv4.DHCPv4) bool {
		return isAnswer(r) && r.ServerIdentifier().Equal(server)
	})
}

func (e *netExchanger) Extend(ctx context.Context, l Lease, rebind bool) (*dhcpv4.DHCPv4, error) {
	if l.ack == nil {
		return nil, errors.New("a lease made without an ACK cannot be extended")
	}
	m, err := dhcpv4.NewRenewFromAck(l.ack, e.options()...)
	if err != nil {
		return nil, err
	}
	if err := newTransaction(m); err != nil {
		return nil, err
	}
	m.OpCode = dhcpv4.OpcodeBootRequest
	dest := &net.UDPAddr{IP: l.Server.AsSlice(), Port: dhcpv4.ServerPort}
	if rebind {
		dest = broadcast
	}
	return e.exchange(ctx, l.Addr.Addr(), dest, m, func(r *dhcpv4.DHCPv4) bool {
		return isAnswer(r) && (rebind || r.ServerIdentifier().Equal(l.Server.AsSlice()))
	})
}

// newTransaction gives m a transaction ID of its own.
func newTransaction(m *dhcpv4.DHCPv4) error {
	xid, err := dhcpv4.GenerateTransactionID()
	if err != nil {
		return err
	}
	m.TransactionID = xid
	return nil
}

// isAnswer reports whether r answers a REQUEST: an ACK or a NAK.
func isAnswer(r *dhcpv4.DHCPv4) bool {
	t := r.MessageType()
	return t == dhcpv4.MessageTypeAck || t == dhcpv4.MessageTypeNak
}
