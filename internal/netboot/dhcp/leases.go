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
	"syscall"
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
	// durable is set once the lease file holds this MAC's binding to ip
	// (its expiry may be older than expires).
	durable bool
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

// newLeaseStore loads the lease file (none is fine). A file that does not
// parse is set aside as <file>.corrupt-<time> and the store starts without
// it: a damaged file must not keep the head from starting (under systemd, a
// crash loop that no node can boot through). known (MAC → address, from the
// head's registry of nodes) fills in the machines the file lacks, bound for
// leaseTime, so that running nodes keep their addresses, and so their names,
// when the lease file was lost or damaged.
func newLeaseStore(naming contract.Naming, exclude map[netip.Addr]bool, file string, known map[string]netip.Addr, leaseTime time.Duration, log *slog.Logger) (*leaseStore, error) {
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
	if err := ls.load(); err != nil {
		return nil, err
	}
	ls.addKnown(known, leaseTime)
	return ls, nil
}

// load reads the lease file into the store.
func (ls *leaseStore) load() error {
	file, log := ls.file, ls.log
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dhcp: read lease file: %w", err)
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil {
		kept, serr := atomicfile.SetAside(file, ls.now())
		if serr != nil {
			return fmt.Errorf("dhcp: lease file %s is corrupt (%v), and it cannot be set aside: %w", file, err, serr)
		}
		log.Error("lease file is corrupt: set aside, starting without it; leases are rebuilt from the node registry, and other machines' addresses are checked (registry, ARP) before they are offered",
			"file", file, "kept_as", kept, "err", err)
		return nil
	}
	for _, l := range lf.Leases {
		hw, err := net.ParseMAC(l.MAC)
		if err != nil || len(hw) != 6 {
			log.Warn("lease file: skipping lease with bad MAC", "mac", l.MAC)
			continue
		}
		if !ls.inPool(l.IP) {
			// The subnet changed since the lease was written.
			log.Warn("lease file: skipping lease outside the pool", "mac", l.MAC, "ip", l.IP, "subnet", ls.subnet)
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
		e := &entry{mac: mac, ip: l.IP, expires: l.Expires, bound: true, durable: true}
		ls.byMAC[mac] = e
		ls.byIP[l.IP] = e
	}
	log.Info("leases loaded", "file", file, "count", len(ls.byMAC))
	return nil
}

// addKnown binds each known machine the store has no entry for to its
// address, unless another machine holds that address, and saves the result.
func (ls *leaseStore) addKnown(known map[string]netip.Addr, d time.Duration) {
	macs := make([]string, 0, len(known))
	for mac := range known {
		macs = append(macs, mac)
	}
	sort.Strings(macs)
	var added []string
	ls.mu.Lock()
	now := ls.now()
	for _, mac := range macs {
		ip := known[mac]
		if ls.byMAC[mac] != nil || ls.byIP[ip] != nil || !ls.inPool(ip) {
			continue
		}
		// Durable already: the registry's file holds the binding, and a
		// restart rebuilds it from there, so a renewal may be ACKed even
		// while the lease file cannot be written.
		ls.take(mac, ip, now.Add(d), true).durable = true
		added = append(added, mac+"="+ip.String())
	}
	ls.mu.Unlock()
	if len(added) == 0 {
		return
	}
	ls.log.Warn("lease file lacked registered nodes: leases rebuilt from the node registry", "file", ls.file, "count", len(added), "leases", added)
	_ = ls.persist() // logged; the leases are held in memory meanwhile
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

// confirmation is confirm's verdict on a REQUEST.
type confirmation int

const (
	// nak: the address is not the client's to have.
	nak confirmation = iota
	// ack: the lease is on disk (or, for a renewal whose binding the file
	// already holds, only the later expiry is not).
	ack
	// unsaved: the lease could be the client's but cannot be written (a
	// full state folder); the store is as before the REQUEST.
	unsaved
)

// confirm binds ip to mac for d (the REQUEST/ACK step). A client we hold an
// entry for must ask for that entry's address. A client we know nothing
// about may have ip if allowNew and ip is free: the lease file may have been
// lost, and we are the segment's only server.
//
// An ACK is a promise that outlives a restart of the head, so a lease is
// acknowledged only once the lease file holds it. When the file cannot be
// written, a client whose binding the file already holds (a renewal) still
// gets its ACK: after a restart it keeps its address, with the expiry last
// saved, and it renews again. Any other client gets unsaved, and the store
// is left as it was, its offer still held for it.
func (ls *leaseStore) confirm(mac string, ip netip.Addr, d time.Duration, allowNew bool) (confirmation, error) {
	ls.mu.Lock()
	now := ls.now()
	e := ls.byMAC[mac]
	var undo func()
	switch {
	case e != nil && e.ip == ip:
		wasBound, wasExpires := e.bound, e.expires
		e.bound = true
		e.expires = now.Add(d)
		undo = func() { e.bound, e.expires = wasBound, wasExpires }
	case e == nil && allowNew && ls.available(ip, mac, now):
		e = ls.take(mac, ip, now.Add(d), true)
		// Back to a held offer, so that the client's retry gets the address.
		undo = func() { e.bound, e.expires = false, now.Add(offerHold) }
	default:
		ls.mu.Unlock()
		return nak, nil
	}
	ls.mu.Unlock()
	err := ls.persist()
	if err == nil {
		return ack, nil
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if e.durable {
		return ack, err
	}
	if ls.byMAC[mac] == e {
		undo()
	}
	return unsaved, err
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
	_ = ls.persist() // logged; the lease file still has the lease running, which only keeps the address reserved longer
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
		_ = ls.persist() // logged; the next change rewrites the file
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

// persist writes the bound leases to the lease file atomically and marks
// them durable. A failure is logged and returned: the change stays in memory
// and the next change retries the write.
//
// It returns only once the file holds this change, so an ACK is sent after
// its lease is on disk. Handlers run concurrently, and one write (one fsync)
// serves every change made before it started: under a burst, callers that
// queued behind a write find their change already flushed (group commit).
func (ls *leaseStore) persist() error {
	if ls.file == "" {
		return nil
	}
	ls.mu.Lock()
	ls.changes++
	mine := ls.changes
	ls.mu.Unlock()

	ls.persistMu.Lock()
	defer ls.persistMu.Unlock()
	if ls.flushed >= mine {
		return nil
	}
	ls.mu.Lock()
	upto := ls.changes
	leases := ls.listLocked()
	var saved []*entry
	for _, e := range ls.byMAC {
		if e.bound {
			saved = append(saved, e)
		}
	}
	ls.mu.Unlock()
	data, err := json.MarshalIndent(leaseFile{Version: 1, Leases: leases}, "", "  ")
	if err == nil {
		// Durable: a lease lost in a power cut would hand its address out twice.
		err = atomicfile.WriteDurable(ls.file, append(data, '\n'), 0o644)
	}
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			ls.log.Error("state directory full: cannot write lease file; new leases are not acknowledged until there is space, known clients keep theirs",
				"file", ls.file, "err", err)
		} else {
			ls.log.Error("cannot write lease file; new leases are not acknowledged until it can be written", "file", ls.file, "err", err)
		}
		return err
	}
	ls.mu.Lock()
	for _, e := range saved {
		// An entry changed since the snapshot keeps its binding: confirm
		// and release change only bound and expires in place.
		e.durable = true
	}
	ls.mu.Unlock()
	ls.flushed = upto
	return nil
}
