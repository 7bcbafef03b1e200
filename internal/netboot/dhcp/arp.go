package dhcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// DefaultAddressCheck is how long the ARP check of an address waits for an
// answer. Hosts answer ARP from the kernel within microseconds on a LAN;
// the margin covers busy or slow ones. A free address costs this much
// delay before its OFFER; an address in use costs one round trip.
const DefaultAddressCheck = 500 * time.Millisecond

// maxARPChecks bounds the ARP checks in flight at once: a rack booting at
// once must not wait for its addresses one by one, but a flood of forged
// DISCOVERs must not become a flood of ARP broadcasts either.
const maxARPChecks = 256

// arpResends is how many ARP probes one check sends, spread over its wait,
// so that one lost frame does not hide a host.
const arpResends = 2

// addrChecker finds out whether an address is already used on the segment.
type addrChecker interface {
	// inUse reports whether a host other than client (the machine the
	// address is meant for) uses ip, and that host's MAC.
	inUse(ctx context.Context, ip netip.Addr, client net.HardwareAddr) (bool, net.HardwareAddr)
}

// arpChecker probes addresses as RFC 5227 describes: an ARP request for the
// address with sender address 0.0.0.0, so that no host's ARP cache learns
// anything from it. A host that holds the address answers; a host that
// ignores ping (ICMP) still does, because without ARP it could not talk at
// all. One packet socket serves every check; a single reader hands each
// ARP packet to the checks waiting for its address.
type arpChecker struct {
	conn    net.PacketConn
	own     net.HardwareAddr
	timeout time.Duration
	slots   chan struct{}
	// done is closed when the socket is to close (nil: never).
	done <-chan struct{}

	mu      sync.Mutex
	waiters map[netip.Addr]map[*arpWaiter]struct{}
}

type arpWaiter struct {
	client net.HardwareAddr
	found  chan net.HardwareAddr // buffered 1
}

// ARP over Ethernet for IPv4 (RFC 826), as the packet socket delivers it
// (cooked: without the Ethernet header).
const (
	arpLen       = 28
	arpRequest   = 1
	arpReply     = 2
	arpHTypeEth  = 1
	arpPTypeIPv4 = 0x0800
)

// openARP opens the ARP packet socket on ifi and starts its reader, which
// ends when ctx is done (the socket is closed then).
func openARP(ctx context.Context, ifi *net.Interface, timeout time.Duration) (*arpChecker, error) {
	if len(ifi.HardwareAddr) != 6 {
		return nil, errors.New("interface has no Ethernet address")
	}
	conn, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_ARP, nil)
	if err != nil {
		return nil, err
	}
	c := newARPChecker(conn, ifi.HardwareAddr, timeout)
	c.done = ctx.Done()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go c.read()
	return c, nil
}

func newARPChecker(conn net.PacketConn, own net.HardwareAddr, timeout time.Duration) *arpChecker {
	return &arpChecker{
		conn:    conn,
		own:     own,
		timeout: timeout,
		slots:   make(chan struct{}, maxARPChecks),
		waiters: map[netip.Addr]map[*arpWaiter]struct{}{},
	}
}

// probeFrame builds an ARP probe for ip from MAC own.
func probeFrame(own net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:], arpHTypeEth)
	binary.BigEndian.PutUint16(b[2:], arpPTypeIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], arpRequest)
	copy(b[8:14], own)
	// Sender protocol address 0.0.0.0 (bytes 14-17) and target hardware
	// address zero (18-23): this is a probe, not an announcement.
	t := ip.As4()
	copy(b[24:28], t[:])
	return b
}

func (c *arpChecker) inUse(ctx context.Context, ip netip.Addr, client net.HardwareAddr) (bool, net.HardwareAddr) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return false, nil
	}
	defer func() { <-c.slots }()

	w := &arpWaiter{client: client, found: make(chan net.HardwareAddr, 1)}
	c.mu.Lock()
	if c.waiters[ip] == nil {
		c.waiters[ip] = map[*arpWaiter]struct{}{}
	}
	c.waiters[ip][w] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters[ip], w)
		if len(c.waiters[ip]) == 0 {
			delete(c.waiters, ip)
		}
		c.mu.Unlock()
	}()

	frame := probeFrame(c.own, ip)
	bcast := &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	deadline := time.NewTimer(c.timeout)
	defer deadline.Stop()
	resend := time.NewTicker(c.timeout / arpResends)
	defer resend.Stop()
	sent := 0
	for {
		if sent < arpResends {
			// A failed send is like a lost frame: the check then relies on
			// the other copy, or finds nothing, as it would on a quiet LAN.
			_, _ = c.conn.WriteTo(frame, bcast)
			sent++
		}
		select {
		case hw := <-w.found:
			return true, hw
		case <-deadline.C:
			return false, nil
		case <-ctx.Done():
			return false, nil
		case <-resend.C:
		}
	}
}

// read hands ARP packets to the checks they concern until done. A failed
// read (the interface going down, say) is tried again after a pause: were
// the reader to stop, every check would find every address free.
func (c *arpChecker) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := c.conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-c.done:
				return
			case <-time.After(readRetry):
			}
			continue
		}
		c.deliver(buf[:n])
	}
}

// deliver matches one ARP packet against the checks in flight. As RFC 5227
// 2.1.1 says, an address is in use if any ARP packet has it as sender
// address, or if another host sends a probe for it (it is claiming it right
// now). Packets from our own MAC (our probes, looped back) and from the
// client the address is meant for (it may hold it already, or be checking
// it itself) do not count.
func (c *arpChecker) deliver(b []byte) {
	if len(b) < arpLen || binary.BigEndian.Uint16(b[0:]) != arpHTypeEth ||
		binary.BigEndian.Uint16(b[2:]) != arpPTypeIPv4 || b[4] != 6 || b[5] != 4 {
		return
	}
	op := binary.BigEndian.Uint16(b[6:])
	if op != arpRequest && op != arpReply {
		return
	}
	sha := net.HardwareAddr(append([]byte(nil), b[8:14]...))
	spa := netip.AddrFrom4([4]byte(b[14:18]))
	tpa := netip.AddrFrom4([4]byte(b[24:28]))
	if bytes.Equal(sha, c.own) {
		return
	}
	var ip netip.Addr
	switch {
	case !spa.IsUnspecified():
		ip = spa
	case op == arpRequest:
		ip = tpa // another host's probe
	default:
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for w := range c.waiters[ip] {
		if bytes.Equal(sha, w.client) {
			continue
		}
		select {
		case w.found <- sha:
		default:
		}
	}
}
