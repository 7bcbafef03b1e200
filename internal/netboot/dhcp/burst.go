package dhcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/mdlayher/packet"
)

// BurstResult is what Burst measured.
type BurstResult struct {
	// Elapsed is the time from the first DISCOVER until the last client got
	// its ACK or gave up.
	Elapsed time.Duration
	// Leases holds one entry per client that completed the exchange.
	Leases []BurstLease
	// Errors holds one entry per client that did not.
	Errors []error
}

// BurstLease is the address one simulated client obtained.
type BurstLease struct {
	MAC    net.HardwareAddr // the simulated client
	IP     netip.Addr       // yiaddr of its ACK
	Server netip.Addr       // server identifier of its ACK
}

// Distinct reports whether no two clients got the same address.
func (r BurstResult) Distinct() bool {
	seen := map[netip.Addr]bool{}
	for _, l := range r.Leases {
		if seen[l.IP] {
			return false
		}
		seen[l.IP] = true
	}
	return true
}

// A burst client that gets no answer sends the same message again (same xid,
// so a late answer to an earlier copy still counts) after 1, 2, then every 4
// seconds, and gives up burstPatience after the first copy. RFC 2131 4.1 asks
// for 4, 8, 16... seconds; starting at one second keeps a lost frame from
// dominating a benchmark, and the cap keeps knocking on a server that was
// busy and dropped what arrived meanwhile. The patience outlasts servers that
// ping an address before offering it: dnsmasq and ISC dhcpd wait up to 3 s
// per address, one address at a time, while DISCOVERs pile up and overflow
// their socket buffer.
const (
	burstFirstRetransmit = time.Second
	burstMaxRetransmit   = 4 * time.Second
	burstPatience        = 60 * time.Second
)

// burstRcvBuf is the receive buffer asked for the shared client socket: a
// whole burst's replies may arrive before the reader gets the CPU.
const burstRcvBuf = 4 << 20

// Burst simulates n machines (distinct random MACs) booting at once: each
// runs DISCOVER/OFFER/REQUEST/ACK against whatever DHCP server answers on
// iface, all concurrently. It is a test and benchmark tool (to compare this
// server with dnsmasq, say); it needs root for its raw socket and must only
// be pointed at a test segment. The leases obtained are released afterwards,
// outside the timed part, so repeated runs do not drain the pool. The error is
// for setup failures; per-client failures are in BurstResult.Errors.
//
// All clients share one raw packet socket, opened before any goroutine
// starts (so it lives in the caller thread's network namespace), and one
// reader hands each reply to its client by transaction ID and client MAC.
// The socket asks for broadcast replies but also works with servers that
// unicast to the client's MAC and offered address regardless: it puts the
// interface into promiscuous mode for as long as it is open, so frames for
// the made-up MACs are seen too.
func Burst(ctx context.Context, iface string, n int) (BurstResult, error) {
	if n <= 0 {
		return BurstResult{}, errors.New("burst: n must be positive")
	}
	if n > 1<<16 {
		return BurstResult{}, errors.New("burst: n must be at most 65536")
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return BurstResult{}, fmt.Errorf("burst: %w", err)
	}
	raw, err := openRawClient(ifi)
	if err != nil {
		return BurstResult{}, fmt.Errorf("burst: raw socket on %s: %w", iface, err)
	}
	defer raw.Close()
	setRcvBuf(raw, burstRcvBuf)
	// Best effort: without it, only servers that honour the broadcast flag
	// (or an interface already in promiscuous mode) can be measured.
	_ = raw.SetPromiscuous(true)
	conn := nclient4.NewBroadcastUDPConn(raw, &net.UDPAddr{Port: dhcpv4.ClientPort})

	prefix := randomMAC()
	clients := make([]*burstClient, n)
	byXID := make(map[dhcpv4.TransactionID]*burstClient, n)
	for i := range clients {
		mac := net.HardwareAddr{prefix[0], prefix[1], prefix[2], prefix[3], byte(i >> 8), byte(i)}
		var discover *dhcpv4.DHCPv4
		for discover == nil || byXID[discover.TransactionID] != nil {
			discover, err = dhcpv4.NewDiscovery(mac,
				dhcpv4.WithBroadcast(true),
				dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))
			if err != nil {
				return BurstResult{}, fmt.Errorf("burst: %w", err)
			}
		}
		c := &burstClient{mac: mac, discover: discover, replies: make(chan *dhcpv4.DHCPv4, 8)}
		clients[i] = c
		byXID[discover.TransactionID] = c
	}

	// The reader ends when the socket is closed.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		burstReader(conn, byXID)
	}()
	defer func() {
		raw.Close()
		<-readerDone
	}()

	var wg sync.WaitGroup
	start := time.Now()
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.ack, c.err = c.run(ctx, conn)
		}()
	}
	wg.Wait()
	res := BurstResult{Elapsed: time.Since(start)}

	for _, c := range clients {
		if c.err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("client %s: %w", c.mac, c.err))
			continue
		}
		res.Leases = append(res.Leases, BurstLease{
			MAC:    c.mac,
			IP:     toAddr(c.ack.YourIPAddr),
			Server: toAddr(c.ack.ServerIdentifier()),
		})
		release(raw, c.ack)
	}
	return res, nil
}

// burstClient is one simulated machine of a burst.
type burstClient struct {
	mac      net.HardwareAddr
	discover *dhcpv4.DHCPv4
	// replies gets the BOOTREPLYs with this client's xid and MAC.
	replies chan *dhcpv4.DHCPv4

	ack *dhcpv4.DHCPv4
	err error
}

// burstReader reads every DHCP reply on conn and passes it to the client
// whose transaction it belongs to, until conn is closed.
func burstReader(conn net.PacketConn, byXID map[dhcpv4.TransactionID]*burstClient) {
	buf := make([]byte, 2048) // an Ethernet frame; BOOTREPLYs are smaller
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		c := byXID[m.TransactionID]
		if c == nil || !bytes.Equal(m.ClientHWAddr, c.mac) {
			continue
		}
		select {
		case c.replies <- m:
		default: // the client has what it needs; duplicates can go
		}
	}
}

// run does the DORA exchange and returns the ACK.
func (c *burstClient) run(ctx context.Context, conn net.PacketConn) (*dhcpv4.DHCPv4, error) {
	offer, err := c.exchange(ctx, conn, c.discover, func(m *dhcpv4.DHCPv4) bool {
		// An offer without an address is a ProxyDHCP server's.
		return m.MessageType() == dhcpv4.MessageTypeOffer && !isZero(m.YourIPAddr)
	})
	if err != nil {
		return nil, fmt.Errorf("no offer: %w", err)
	}
	request, err := dhcpv4.NewRequestFromOffer(offer,
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))
	if err != nil {
		return nil, err
	}
	server := offer.ServerIdentifier()
	reply, err := c.exchange(ctx, conn, request, func(m *dhcpv4.DHCPv4) bool {
		t := m.MessageType()
		return (t == dhcpv4.MessageTypeAck || t == dhcpv4.MessageTypeNak) &&
			(server == nil || server.Equal(m.ServerIdentifier()))
	})
	if err != nil {
		return nil, fmt.Errorf("no ACK for %v from %v: %w", offer.YourIPAddr, server, err)
	}
	if reply.MessageType() == dhcpv4.MessageTypeNak {
		return nil, fmt.Errorf("NAK for %v from %v: %s", offer.YourIPAddr, server, reply.Message())
	}
	return reply, nil
}

// exchange broadcasts msg and waits for a reply that match accepts,
// retransmitting it until burstPatience runs out.
func (c *burstClient) exchange(ctx context.Context, conn net.PacketConn, msg *dhcpv4.DHCPv4, match func(*dhcpv4.DHCPv4) bool) (*dhcpv4.DHCPv4, error) {
	pkt := msg.ToBytes()
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	giveUp := time.Now().Add(burstPatience)
	for wait := burstFirstRetransmit; ; wait = min(2*wait, burstMaxRetransmit) {
		left := time.Until(giveUp)
		if left <= 0 {
			break
		}
		if _, err := conn.WriteTo(pkt, dest); err != nil {
			return nil, fmt.Errorf("send %s: %w", msg.MessageType(), err)
		}
		if m, err := c.await(ctx, min(wait, left), match); m != nil || err != nil {
			return m, err
		}
	}
	return nil, errors.New("no matching response packet received")
}

// await waits up to d for a reply that match accepts; nil, nil means none came.
func (c *burstClient) await(ctx context.Context, d time.Duration, match func(*dhcpv4.DHCPv4) bool) (*dhcpv4.DHCPv4, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, nil
		case m := <-c.replies:
			if match(m) {
				return m, nil
			}
		}
	}
}

// release sends a DHCPRELEASE for ack from the leased address. nclient4's
// Release sends from 0.0.0.0, which Linux drops as a martian source when the
// destination is a unicast address, so the server would never see it.
func release(raw *packet.Conn, ack *dhcpv4.DHCPv4) {
	m, err := dhcpv4.NewReleaseFromACK(ack)
	if err != nil {
		return
	}
	from := nclient4.NewBroadcastUDPConn(raw, &net.UDPAddr{IP: ack.YourIPAddr, Port: dhcpv4.ClientPort})
	_, _ = from.WriteTo(m.ToBytes(), &net.UDPAddr{IP: ack.ServerIdentifier(), Port: dhcpv4.ServerPort})
}

// randomMAC returns a random unicast, locally administered MAC.
func randomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	_, _ = rand.Read(m)
	m[0] = m[0]&^0x01 | 0x02
	return m
}
