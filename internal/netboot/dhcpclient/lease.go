// Package dhcpclient takes and keeps one DHCPv4 lease, as any machine on a
// LAN does: node1's head uses it when it finds that the LAN it is on has
// its own DHCP server, so that node1 gets an address there from that
// server, from its own MAC and under its own name, and keeps it (RFC 2131:
// INIT, SELECTING, REQUESTING, BOUND, RENEWING at T1, REBINDING at T2).
//
// The policy (when to renew, rebind or give up) is Keeper, which talks to
// the network through an Exchanger and reads the time from a Clock, so
// that its unit tests run on a fake clock. Open returns the real
// Exchanger: raw packet sockets on the interface (so that it needs no
// address and no port 68 of its own), through
// github.com/insomniacslk/dhcp's nclient4.
package dhcpclient

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Infinite is Lease.Duration for a lease that never runs out (RFC 2132:
// 0xffffffff seconds).
const Infinite time.Duration = -1

// Lease is one address leased from a DHCP server.
type Lease struct {
	// Addr is the leased address with the length of the subnet mask the
	// server gave (option 1): the LAN's network.
	Addr netip.Prefix
	// Server is the server's identifier (option 54), where renewals go.
	Server netip.Addr
	// Router is the first router the server named (option 3), if any.
	Router netip.Addr
	// DNS are the DNS servers it named (option 6).
	DNS []netip.Addr
	// Domain is the domain name it named (option 15).
	Domain string
	// Start is when the request that got the lease was sent: RFC 2131
	// counts the lease's times from then.
	Start time.Time
	// Duration is the lease time (option 51), or Infinite.
	Duration time.Duration
	// T1 and T2 are when to renew and rebind, after Start (options 58 and
	// 59; by default half and seven eighths of Duration).
	T1, T2 time.Duration

	// ack is the server's ACK, which renewals are made from.
	ack *dhcpv4.DHCPv4
}

// Expiry is when the lease runs out; the zero Time for an infinite one.
func (l Lease) Expiry() time.Time {
	if l.Duration == Infinite {
		return time.Time{}
	}
	return l.Start.Add(l.Duration)
}

// RenewAt is T1: when to ask the server to extend the lease.
func (l Lease) RenewAt() time.Time { return l.Start.Add(l.T1) }

// RebindAt is T2: when to ask any server.
func (l Lease) RebindAt() time.Time { return l.Start.Add(l.T2) }

// Remaining is how long the lease still runs at now (0 once expired), or
// Infinite.
func (l Lease) Remaining(now time.Time) time.Duration {
	if l.Duration == Infinite {
		return Infinite
	}
	return max(l.Expiry().Sub(now), 0)
}

// minLease is the shortest lease this client accepts: the minimum of
// dnsmasq and ISC dhcpd is a minute or two, and anything shorter would
// have the head renewing all the time.
const minLease = 30 * time.Second

// ErrUnusable is wrapped by FromACK's errors: a server answered, with
// nothing a client can use.
var ErrUnusable = errors.New("unusable DHCPACK")

// FromACK reads a lease from a server's ACK to a request sent at start. An
// ACK without an address, a subnet mask or a server identifier is an
// error (wrapping ErrUnusable): the head cannot serve a network it does not
// know.
func FromACK(ack *dhcpv4.DHCPv4, start time.Time) (Lease, error) {
	l, err := fromACK(ack, start)
	if err != nil {
		return l, fmt.Errorf("%w: %w", ErrUnusable, err)
	}
	return l, nil
}

func fromACK(ack *dhcpv4.DHCPv4, start time.Time) (Lease, error) {
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		return Lease{}, errors.New("not a DHCPACK")
	}
	ip := toAddr(ack.YourIPAddr)
	if !ip.IsValid() {
		return Lease{}, errors.New("the DHCPACK holds no address")
	}
	mask := ack.SubnetMask()
	if mask == nil {
		return Lease{}, fmt.Errorf("the DHCPACK for %v holds no subnet mask", ip)
	}
	ones, bits := mask.Size()
	if bits != 32 {
		return Lease{}, fmt.Errorf("the DHCPACK for %v holds an invalid subnet mask %v", ip, mask)
	}
	l := Lease{Addr: netip.PrefixFrom(ip, ones), Start: start, Domain: ack.DomainName(), ack: ack}
	l.Server = toAddr(ack.ServerIdentifier())
	if !l.Server.IsValid() {
		return Lease{}, fmt.Errorf("the DHCPACK for %v names no server", ip)
	}
	if rs := ack.Router(); len(rs) > 0 {
		l.Router = toAddr(rs[0])
	}
	for _, d := range ack.DNS() {
		if a := toAddr(d); a.IsValid() {
			l.DNS = append(l.DNS, a)
		}
	}
	raw := ack.Options.Get(dhcpv4.OptionIPAddressLeaseTime)
	switch {
	case len(raw) == 4 && raw[0] == 0xff && raw[1] == 0xff && raw[2] == 0xff && raw[3] == 0xff:
		l.Duration = Infinite
		return l, nil
	case len(raw) != 4:
		return Lease{}, fmt.Errorf("the DHCPACK for %v holds no lease time", ip)
	}
	l.Duration = ack.IPAddressLeaseTime(0)
	if l.Duration < minLease {
		return Lease{}, fmt.Errorf("the lease of %v runs only %v", ip, l.Duration)
	}
	// Seven eighths as Duration/8*7: Duration*7 overflows for leases
	// longer than 41 years (up to 0xfffffffe seconds, 136 years), which
	// made T1 and T2 negative and the head renew without pause.
	rebindAt := l.Duration / 8 * 7
	l.T1 = ack.IPAddressRenewalTime(l.Duration / 2)
	l.T2 = ack.IPAddressRebindingTime(rebindAt)
	// A server's odd T1/T2 must not stop renewals: keep T1 < T2 < lease.
	if l.T2 <= 0 || l.T2 >= l.Duration {
		l.T2 = rebindAt
	}
	if l.T1 <= 0 || l.T1 >= l.T2 {
		l.T1 = min(l.Duration/2, l.T2/2)
	}
	return l, nil
}

// String describes the lease for logs: "192.168.50.23/23 from 192.168.50.1
// for 2m0s".
func (l Lease) String() string {
	d := "ever"
	if l.Duration != Infinite {
		d = l.Duration.String()
	}
	return fmt.Sprintf("%v from %v for %s", l.Addr, l.Server, d)
}

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
