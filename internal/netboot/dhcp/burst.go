package dhcp

import (
	"context"
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

// Burst simulates n machines (distinct random MACs) booting at once: each
// runs DISCOVER/OFFER/REQUEST/ACK with nclient4 against whatever DHCP server
// answers on iface, all concurrently. It is a test and benchmark tool (to
// compare this server with dnsmasq, say); it needs root for its raw sockets
// and must only be pointed at a test segment. The leases obtained are
// released afterwards, outside the timed part, so repeated runs do not drain
// the pool. The error is for setup failures; per-client failures are in
// BurstResult.Errors.
func Burst(ctx context.Context, iface string, n int) (BurstResult, error) {
	if n <= 0 {
		return BurstResult{}, errors.New("burst: n must be positive")
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return BurstResult{}, fmt.Errorf("burst: %w", err)
	}
	// Open every socket here, before any goroutine starts, so they all live
	// in the caller thread's network namespace.
	prefix := randomMAC()
	clients := make([]*nclient4.Client, 0, n)
	raws := make([]*packet.Conn, 0, n)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := range n {
		mac := net.HardwareAddr{prefix[0], prefix[1], prefix[2], prefix[3], byte(i >> 8), byte(i)}
		raw, err := openRawClient(ifi)
		if err != nil {
			return BurstResult{}, fmt.Errorf("burst: raw socket on %s: %w", iface, err)
		}
		conn := nclient4.NewBroadcastUDPConn(raw, &net.UDPAddr{Port: dhcpv4.ClientPort})
		raws = append(raws, raw)
		c, err := nclient4.NewWithConn(conn, mac, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			conn.Close()
			return BurstResult{}, fmt.Errorf("burst: %w", err)
		}
		clients = append(clients, c)
	}

	type outcome struct {
		lease *nclient4.Lease
		err   error
	}
	results := make([]outcome, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Ask for broadcast replies: a made-up MAC cannot receive a
			// unicast OFFER from servers that honour the flag.
			l, err := c.Request(ctx, dhcpv4.WithBroadcast(true))
			results[i] = outcome{l, err}
		}()
	}
	wg.Wait()
	res := BurstResult{Elapsed: time.Since(start)}

	for i, r := range results {
		mac := clients[i].InterfaceAddr()
		if r.err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("client %s: %w", mac, r.err))
			continue
		}
		res.Leases = append(res.Leases, BurstLease{
			MAC:    mac,
			IP:     toAddr(r.lease.ACK.YourIPAddr),
			Server: toAddr(r.lease.ACK.ServerIdentifier()),
		})
		release(raws[i], r.lease.ACK)
	}
	return res, nil
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
