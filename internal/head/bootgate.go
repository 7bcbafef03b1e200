package head

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netboot/httpboot"
)

// A node's iPXE script carries the cluster token, and serving it exports
// node1's root to the node: so the head serves it only to a machine that is
// booting from it, that is, one that went through the head's DHCP exchange
// moments ago (or holds a lease from it), and only at the address DHCP
// associated with that machine. Every boot path does such an exchange just
// before it asks for the script: iPXE in a NIC's ROM and iPXE chainloaded
// over TFTP or by UEFI HTTP boot each run DHCP themselves as iPXE, in
// server mode as in proxy mode.

// ScriptWindow is how long after its last DHCP exchange with the head a
// machine may fetch its iPXE script. iPXE asks for it at once; the margin
// is for slow firmware, not for machines that never asked.
const ScriptWindow = 5 * time.Minute

// dhcpSeen remembers the head's last DHCP exchange with each MAC, and the
// address that exchange gave the machine: the head's own offer or lease in
// server mode; in proxy mode the address the machine asked the other
// server for, or its address when it came to port 4011. In memory only: a
// restarted head in server mode has its lease file instead.
type dhcpSeen struct {
	mu sync.Mutex
	m  map[string]seenDHCP
}

type seenDHCP struct {
	at time.Time
	ip netip.Addr
}

// seenPrune is the size past which record drops stale entries.
const seenPrune = 4096

// record notes a DHCP event for mac. An offer starts an exchange: its
// address (none in proxy mode) replaces the one of an earlier boot. Later
// events of the exchange keep it unless they name one.
func (s *dhcpSeen) record(mac string, ip netip.Addr, stage string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]seenDHCP{}
	}
	e := s.m[mac]
	e.at = now
	if ip.IsValid() || stage == dhcp.StageDHCPOffered {
		e.ip = ip
	}
	s.m[mac] = e
	if len(s.m) > seenPrune {
		for k, v := range s.m {
			if now.Sub(v.at) > ScriptWindow {
				delete(s.m, k)
			}
		}
	}
}

// lookup returns mac's last exchange when it was within ScriptWindow of now.
func (s *dhcpSeen) lookup(mac string, now time.Time) (seenDHCP, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[mac]
	if !ok || now.Sub(e.at) > ScriptWindow {
		return seenDHCP{}, false
	}
	return e, true
}

// admit decides whether the machine with mac, asking from remote, gets its
// iPXE script, and returns the address it boots with: the one DHCP gave it,
// which its name follows. A refusal wraps httpboot.ErrForbidden and says
// why, for the log.
func (h *Head) admit(mac net.HardwareAddr, remote netip.Addr, now time.Time) (netip.Addr, error) {
	key := contract.MACString(mac)
	var want netip.Addr
	if h.opts.DHCP == dhcp.ModeOff {
		// Another DHCP server sends the nodes here: the head sees no
		// exchange to hold the fetch to (logged at start).
		want = remote
	} else {
		known := false
		if h.dhcp != nil && h.dhcp.Mode() == dhcp.ModeServer {
			for _, l := range h.dhcp.Leases() {
				if l.MAC == key && l.Expires.After(now) {
					want, known = l.IP, true
					break
				}
			}
		}
		if e, ok := h.seen.lookup(key, now); ok {
			known = true
			if !want.IsValid() {
				want = e.ip
			}
		}
		if !known {
			return netip.Addr{}, fmt.Errorf("%w: %s asked from %s without a DHCP exchange with this head in the last %v: it did not boot from the cluster network",
				httpboot.ErrForbidden, key, remote, ScriptWindow)
		}
		if want.IsValid() && want != remote {
			return netip.Addr{}, fmt.Errorf("%w: %s asked from %s, but DHCP gave that machine %s", httpboot.ErrForbidden, key, remote, want)
		}
		if !want.IsValid() {
			// Proxy mode, the address not seen: the exchange was this
			// machine's, and this is where it asks from.
			want = remote
		}
	}
	if !h.naming.Subnet.Contains(want) {
		return netip.Addr{}, fmt.Errorf("%w: %s asked from %s, outside the cluster subnet %v", httpboot.ErrForbidden, key, want, h.naming.Subnet)
	}
	return want, nil
}

// boot admits a machine (see admit) and prepares its boot: node1's NFS
// server exports to it, and it gets its name, from the address DHCP gave
// it, and its command line, with BOOTIF naming the card it boots from.
func (h *Head) boot(mac net.HardwareAddr, remote netip.Addr) (name string, c contract.Cmdline, addr netip.Addr, err error) {
	remote = remote.Unmap()
	addr, err = h.admit(mac, remote, time.Now())
	if err != nil {
		return "", c, addr, err
	}
	key := contract.MACString(mac)
	if h.exports != nil {
		gen := h.exports.add(key, addr)
		ctx, cancel := context.WithTimeout(context.Background(), exportWait)
		err := h.exports.wait(ctx, gen)
		cancel()
		if err != nil {
			h.log.Warn("the node's NFS export is not in place yet; serving its script anyway", "mac", key, "ip", addr, "err", err)
		}
	}
	c = h.nodeCmdline()
	c.BootMAC = mac
	return h.naming.MustName(addr), c, addr, nil
}

// script renders a node's iPXE script for httpboot, for a machine admit
// lets in.
func (h *Head) script(mac net.HardwareAddr, remote netip.Addr) (string, error) {
	name, c, addr, err := h.boot(mac, remote)
	if err != nil {
		return "", err
	}
	s, err := Script(name, mac, c)
	if err != nil {
		return "", err
	}
	h.log.Info("ipxe script", "mac", contract.MACString(mac), "ip", addr, "node", name)
	return s, nil
}

// grubScript renders a node's GRUB script for httpboot (a UEFI PXE client
// that came through shim and Debian's signed GRUB), for a machine admit
// lets in: the same gate, export and command line as the iPXE script.
func (h *Head) grubScript(mac net.HardwareAddr, remote netip.Addr) (string, error) {
	name, c, addr, err := h.boot(mac, remote)
	if err != nil {
		return "", err
	}
	h.log.Info("grub script", "mac", contract.MACString(mac), "ip", addr, "node", name)
	return GRUBScript(name, mac, c), nil
}
