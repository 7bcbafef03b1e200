package dhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

const (
	// conflictHold keeps an address found in use (it answered ARP, or the
	// head knows it as another machine's) out of the pool for a while, so
	// the next DISCOVERs do not try it again and again. The host may leave
	// later; then the address comes back.
	conflictHold = 10 * time.Minute
	// maxOfferTries bounds the addresses one DISCOVER tries. An address in
	// use costs an ARP round trip, so even a pool full of static hosts ends
	// fast; past this the client retransmits and the next try starts
	// further on, since the failed addresses are held out.
	maxOfferTries = 16
)

// offerAddress picks the address to offer the machine hw (mac is its string
// form) and makes sure, before it is offered, that nobody holds it: not the
// head itself, nor a machine the head knows (Config.InUse), nor a host that
// answers ARP. An
// address the machine holds a running lease for is its own and is not
// checked. Addresses found in use are held out of the pool for
// conflictHold and the next one is tried.
func (s *Server) offerAddress(hw net.HardwareAddr, mac string, requested netip.Addr) (netip.Addr, error) {
	for range maxOfferTries {
		ip, err := s.pool.offer(mac, requested)
		if err != nil {
			return netip.Addr{}, err
		}
		if !s.pool.needsCheck(mac, ip) {
			return ip, nil
		}
		if why, holder := s.addrTaken(ip, hw); why != "" {
			s.pool.setAside(mac, ip, conflictHold)
			s.log.Warn("dhcp: address in use; not offered, trying the next", "mac", mac, "ip", ip,
				"reason", why, "holder", holder, "held_out_for", conflictHold.String())
			requested = netip.Addr{}
			continue
		}
		s.pool.markChecked(mac, ip)
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("%d candidate addresses in a row are in use", maxOfferTries)
}

// addrTaken reports why ip cannot go to the machine hw ("" if it can) and,
// if a host answered ARP for it, that host's MAC.
func (s *Server) addrTaken(ip netip.Addr, hw net.HardwareAddr) (why, holder string) {
	if s.isOwn(ip) {
		// A second address of the head's own interface: our kernel never
		// sees our own ARP probe, so ARP cannot tell.
		return "an address of the head itself", ""
	}
	if s.cfg.InUse != nil && s.cfg.InUse(ip, hw) {
		return "known to the head as another machine's", ""
	}
	if s.arp != nil {
		ctx := s.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		if used, by := s.arp.inUse(ctx, ip, hw); used {
			return "another host answers ARP for it", by.String()
		}
	}
	return "", ""
}

// needsCheck reports whether ip, now reserved for mac, must be checked
// before it is offered: it is not mac's running lease, and was not found
// free for mac within offerHold.
func (ls *leaseStore) needsCheck(mac string, ip netip.Addr) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	now := ls.now()
	e := ls.byMAC[mac]
	if e == nil || e.ip != ip {
		return true
	}
	if e.bound && now.Before(e.expires) {
		return false
	}
	return e.checked.IsZero() || now.Sub(e.checked) > offerHold
}

// markChecked records that mac's address ip was found free.
func (ls *leaseStore) markChecked(mac string, ip netip.Addr) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if e := ls.byMAC[mac]; e != nil && e.ip == ip {
		e.checked = ls.now()
	}
}

// setAside drops mac's entry for ip (a reservation, or an expired lease the
// address of which another host now uses) and keeps ip out of the pool for
// d.
func (ls *leaseStore) setAside(mac string, ip netip.Addr, d time.Duration) {
	ls.mu.Lock()
	wasBound := false
	if e := ls.byMAC[mac]; e != nil && e.ip == ip {
		wasBound = e.bound
		delete(ls.byMAC, mac)
		delete(ls.byIP, ip)
	}
	ls.declined[ip] = ls.now().Add(d)
	ls.mu.Unlock()
	if wasBound {
		_ = ls.persist() // logged; the next change rewrites the file
	}
}

// holdOffer holds a server-mode OFFER back until OfferDelay after the
// DISCOVER arrived (at start), while the segment is watched for another
// server's answer. It reports whether the OFFER may go out: false once
// another server has shown itself (auto mode has then become a ProxyDHCP
// server for good) or when the server is stopping.
func (s *Server) holdOffer(start time.Time) bool {
	wait := time.Until(start.Add(s.cfg.OfferDelay))
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		var done <-chan struct{}
		if s.ctx != nil {
			done = s.ctx.Done()
		}
		select {
		case <-t.C:
		case <-s.stickyc:
		case <-done:
			return false
		}
	}
	return s.Mode() == ModeServer
}

// pendingOffer reports whether mac holds an address we offered and it has
// not yet requested.
func (ls *leaseStore) pendingOffer(mac string) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	e := ls.byMAC[mac]
	return e != nil && !e.bound && ls.now().Before(e.expires)
}
