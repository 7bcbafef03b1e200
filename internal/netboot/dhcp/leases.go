package dhcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
)

const (
	// offerHold is how long an offered but not yet requested address stays
	// reserved for its client, so that concurrent DISCOVERs from different
	// machines never get the same address.
	offerHold = 2 * time.Minute
	// declineHold keeps an address a client found in use (DHCPDECLINE) out
	// of the pool for a while, as RFC 2131 4.3.3 asks.
	declineHold = 10 * time.Minute
)

// entry is one MAC's address. bound entries have been ACKed and are
// persisted; unbound ones are offers held in memory only.
type entry struct {
	mac     string
	ip      netip.Addr
	expires time.Time
	bound   bool
	// checked is when the address was last found free on the segment for
	// this machine (ARP check); zero if never.
	checked time.Time
}

// leaseStore allocates addresses from the pool and persists bound leases.
type leaseStore struct {
	subnet  netip.Prefix
	naming  contract.Naming
	first   netip.Addr
	last    netip.Addr
	exclude map[netip.Addr]bool
	file    string
	log     *slog.Logger
	now     func() time.Time

	mu       sync.Mutex
	byMAC    map[string]*entry
	byIP     map[netip.Addr]*entry
	declined map[netip.Addr]time.Time

	// changes counts lease changes (under mu); flushed is the count the lease
	// file reflects (under persistMu).
	changes uint64
	flushed uint64

	// persistMu serialises writes; the snapshot is taken while holding it so
	// a later state is never overwritten by an earlier one.
	persistMu sync.Mutex
}

// leaseFile is the on-disk format.
type leaseFile struct {
	Version int     `json:"version"`
	Leases  []Lease `json:"leases"`
}

func newLeaseStore(naming contract.Naming, exclude map[netip.Addr]bool, file string, log *slog.Logger) (*leaseStore, error) {
	subnet := naming.Subnet
	ls := &leaseStore{
		subnet:   subnet,
		naming:   naming,
		first:    subnet.Addr().Next().Next(),
		last:     lastAddr(subnet).Prev(),
		exclude:  exclude,
		file:     file,
		log:      log,
		now:      time.Now,
		byMAC:    map[string]*entry{},
		byIP:     map[netip.Addr]*entry{},
		declined: map[netip.Addr]time.Time{},
	}
	if file == "" {
		return ls, nil
	}
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return ls, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dhcp: read lease file: %w", err)
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil {
		return nil, fmt.Errorf("dhcp: lease file %s is corrupt (fix or remove it): %w", file, err)
	}
	for _, l := range lf.Leases {
		hw, err := net.ParseMAC(l.MAC)
		if err != nil || len(hw) != 6 {
			log.Warn("lease file: skipping lease with bad MAC", "mac", l.MAC)
			continue
		}
		if !ls.inPool(l.IP) {
			// The subnet changed since the lease was written.
			log.Warn("lease file: skipping lease outside the pool", "mac", l.MAC, "ip", l.IP, "subnet", subnet)
			continue
		}
		mac := contract.MACString(hw)
		if old := ls.byIP[l.IP]; old != nil {
			if !l.Expires.After(old.expires) {
				continue
			}
			delete(ls.byMAC, old.mac)
		}
		if old := ls.byMAC[mac]; old != nil {
			if !l.Expires.After(old.expires) {
				continue
			}
			delete(ls.byIP, old.ip)
		}
		e := &entry{mac: mac, ip: l.IP, expires: l.Expires, bound: true}
		ls.byMAC[mac] = e
		ls.byIP[l.IP] = e
	}
	log.Info("leases loaded", "file", file, "count", len(ls.byMAC))
	return ls, nil
}

// inPool reports whether ip may be handed out.
func (ls *leaseStore) inPool(ip netip.Addr) bool {
	return ip.Is4() && ls.subnet.Contains(ip) && !ls.exclude[ip] &&
		ip.Compare(ls.first) >= 0 && ip.Compare(ls.last) <= 0
}

// available reports whether ip is in the pool and held by nobody but mac.
// Caller holds mu.
func (ls *leaseStore) available(ip netip.Addr, mac string, now time.Time) bool {
	if !ls.inPool(ip) {
		return false
	}
	if until, ok := ls.declined[ip]; ok {
		if now.Before(until) {
			return false
		}
		delete(ls.declined, ip)
	}
	e := ls.byIP[ip]
	return e == nil || e.mac == mac || (!e.bound && now.After(e.expires))
}

// take gives ip to mac, dropping whatever entry held it. Caller holds mu.
func (ls *leaseStore) take(mac string, ip netip.Addr, expires time.Time, bound bool) *entry {
	if old := ls.byIP[ip]; old != nil {
		delete(ls.byMAC, old.mac)
		delete(ls.byIP, ip)
	}
	if old := ls.byMAC[mac]; old != nil {
		delete(ls.byIP, old.ip)
		delete(ls.byMAC, mac)
	}
	e := &entry{mac: mac, ip: ip, expires: expires, bound: bound}
	ls.byMAC[mac] = e
	ls.byIP[ip] = e
	return e
}

// offer picks the address for mac: its previous one (even expired) if any,
// else the one it asks for if free, else the lowest free address, else the
// longest-expired lease of another machine.
func (ls *leaseStore) offer(mac string, requested netip.Addr) (netip.Addr, error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	now := ls.now()
	if e := ls.byMAC[mac]; e != nil {
		if !e.bound {
			e.expires = now.Add(offerHold)
		}
		return e.ip, nil
	}
	if requested.IsValid() && ls.available(requested, mac, now) {
		return ls.take(mac, requested, now.Add(offerHold), false).ip, nil
	}
	for ip := ls.first; ip.IsValid() && ip.Compare(ls.last) <= 0; ip = ip.Next() {
		if ls.available(ip, mac, now) {
			return ls.take(mac, ip, now.Add(offerHold), false).ip, nil
		}
	}
	// Pool exhausted: reclaim the address whose lease ran out longest ago.
	var victim *entry
	for _, e := range ls.byIP {
		if now.After(e.expires) && ls.inPool(e.ip) {
			if _, dec := ls.declined[e.ip]; dec {
				continue
			}
			if victim == nil || e.expires.Before(victim.expires) ||
				(e.expires.Equal(victim.expires) && e.ip.Less(victim.ip)) {
				victim = e
			}
		}
	}
	if victim == nil {
		return netip.Addr{}, errors.New("address pool exhausted")
	}
	ls.log.Warn("pool exhausted: reclaiming expired lease", "ip", victim.ip, "old_mac", victim.mac, "new_mac", mac)
	return ls.take(mac, victim.ip, now.Add(offerHold), false).ip, nil
}

// confirm binds ip to mac for d (the REQUEST/ACK step). A client we hold an
// entry for must ask for that entry's address. A client we know nothing
// about may have ip if allowNew and ip is free: the lease file may have been
// lost, and we are the segment's only server. It reports whether to ACK.
func (ls *leaseStore) confirm(mac string, ip netip.Addr, d time.Duration, allowNew bool) bool {
	ls.mu.Lock()
	now := ls.now()
	e := ls.byMAC[mac]
	switch {
	case e != nil && e.ip == ip:
		e.bound = true
		e.expires = now.Add(d)
	case e == nil && allowNew && ls.available(ip, mac, now):
		ls.take(mac, ip, now.Add(d), true)
	default:
		ls.mu.Unlock()
		return false
	}
	ls.mu.Unlock()
	ls.persist()
	return true
}

// forgetOffer drops an unbound offer for mac: the client took another
// server's offer.
func (ls *leaseStore) forgetOffer(mac string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if e := ls.byMAC[mac]; e != nil && !e.bound {
		delete(ls.byMAC, mac)
		delete(ls.byIP, e.ip)
	}
}

// release ends mac's lease on ip now. The entry stays, so the machine gets
// the same address back next time unless the pool runs dry.
func (ls *leaseStore) release(mac string, ip netip.Addr) bool {
	ls.mu.Lock()
	e := ls.byMAC[mac]
	if e == nil || e.ip != ip {
		ls.mu.Unlock()
		return false
	}
	if !e.bound {
		delete(ls.byMAC, mac)
		delete(ls.byIP, ip)
		ls.mu.Unlock()
		return true
	}
	e.expires = ls.now()
	ls.mu.Unlock()
	ls.persist()
	return true
}

// decline takes ip away from mac and out of the pool for declineHold: the
// client saw another host using it.
func (ls *leaseStore) decline(mac string, ip netip.Addr) bool {
	ls.mu.Lock()
	e := ls.byMAC[mac]
	if e == nil || e.ip != ip {
		ls.mu.Unlock()
		return false
	}
	delete(ls.byMAC, mac)
	delete(ls.byIP, ip)
	ls.declined[ip] = ls.now().Add(declineHold)
	wasBound := e.bound
	ls.mu.Unlock()
	if wasBound {
		ls.persist()
	}
	return true
}

// lookup returns mac's current address, if any.
func (ls *leaseStore) lookup(mac string) (netip.Addr, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if e := ls.byMAC[mac]; e != nil {
		return e.ip, true
	}
	return netip.Addr{}, false
}

// list returns the bound leases ordered by address.
func (ls *leaseStore) list() []Lease {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.listLocked()
}

func (ls *leaseStore) listLocked() []Lease {
	out := make([]Lease, 0, len(ls.byMAC))
	for _, e := range ls.byMAC {
		if e.bound {
			out = append(out, Lease{MAC: e.mac, IP: e.ip, Hostname: ls.naming.MustName(e.ip), Expires: e.expires})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// persist writes the bound leases to the lease file atomically. A failure is
// logged, not returned: the lease stays valid in memory and the next change
// retries the write.
//
// It returns only once the file holds this change, so an ACK is sent after
// its lease is on disk. Handlers run concurrently, and one write (one fsync)
// serves every change made before it started: under a burst, callers that
// queued behind a write find their change already flushed (group commit).
func (ls *leaseStore) persist() {
	if ls.file == "" {
		return
	}
	ls.mu.Lock()
	ls.changes++
	mine := ls.changes
	ls.mu.Unlock()

	ls.persistMu.Lock()
	defer ls.persistMu.Unlock()
	if ls.flushed >= mine {
		return
	}
	ls.mu.Lock()
	upto := ls.changes
	leases := ls.listLocked()
	ls.mu.Unlock()
	data, err := json.MarshalIndent(leaseFile{Version: 1, Leases: leases}, "", "  ")
	if err == nil {
		// Durable: a lease lost in a power cut would hand its address out twice.
		err = atomicfile.WriteDurable(ls.file, append(data, '\n'), 0o644)
	}
	if err != nil {
		ls.log.Error("cannot write lease file", "file", ls.file, "err", err)
		return
	}
	ls.flushed = upto
}
