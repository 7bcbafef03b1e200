// Package bootstage records how far each cluster node has got in network
// booting. The DHCP, TFTP and HTTP servers all report into one Tracker so
// that an operator (and the QEMU harness) can see where a node stalled:
// a node stuck at "dhcp-offered" never fetched iPXE, one stuck at
// "kernel-fetched" never asked for its initrd, and so on.
package bootstage

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// Boot stages, in the order a healthy node passes through them.
const (
	// DHCPOffered: the DHCP server offered the node an address.
	DHCPOffered = "dhcp-offered"
	// IPXELoaded: the iPXE boot binary was fetched over TFTP or HTTP.
	IPXELoaded = "ipxe-loaded"
	// GRUBLoaded: UEFI PXE firmware took the Secure Boot chain instead of
	// iPXE: shim fetched Debian's signed GRUB over TFTP. A node passes
	// either IPXELoaded or GRUBLoaded.
	GRUBLoaded = "grub-loaded"
	// ScriptFetched: iPXE or GRUB fetched its per-node boot script.
	ScriptFetched = "script-fetched"
	// KernelFetched: the Linux kernel was fetched.
	KernelFetched = "kernel-fetched"
	// InitrdFetched: the initramfs was fetched.
	InitrdFetched = "initrd-fetched"
	// RootFetched: the root squashfs was fetched over HTTP, or the NFS
	// root was mounted.
	RootFetched = "root-fetched"
	// Registered: the booted node reported back to the head.
	Registered = "registered"
)

// Stages lists the boot stages in order. Callers must not modify it.
var Stages = []string{DHCPOffered, IPXELoaded, GRUBLoaded, ScriptFetched, KernelFetched, InitrdFetched, RootFetched, Registered}

// StageIndex returns the position of stage in Stages, or -1 for an unknown
// stage. It lets callers ask "has this node got at least as far as X".
func StageIndex(stage string) int {
	return slices.Index(Stages, stage)
}

// MaxHistory bounds the events kept per node, so that a node stuck in a
// reboot loop cannot grow the tracker without limit. The oldest events are
// dropped first.
const MaxHistory = 64

// Node is the boot state of one machine, as served by the HTTP stage API.
type Node struct {
	MAC     string    `json:"mac"`              // lower-case colon form; empty if only the IP is known
	IP      string    `json:"ip"`               // last IPv4/IPv6 address seen; empty if unknown
	Stage   string    `json:"stage"`            // most recent stage reported
	Detail  string    `json:"detail,omitempty"` // detail of the most recent stage (e.g. file name)
	Updated time.Time `json:"updated"`          // time of the most recent stage
	History []Event   `json:"history"`          // every stage reported, oldest first (bounded by MaxHistory)
}

// Event is one stage report in a Node's history.
type Event struct {
	Stage  string    `json:"stage"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// Tracker collects stage reports. It is safe for concurrent use; the zero
// value is not usable, use NewTracker.
type Tracker struct {
	mu sync.Mutex
	// nodes is keyed by MAC string, or by "ip:"+address for reports that
	// arrived before any report told us the MAC of that address.
	nodes map[string]*Node
	// ipMAC maps an address to the MAC last seen with it, so that TFTP and
	// HTTP (which see only the peer address) can attribute their reports.
	ipMAC map[netip.Addr]string
	now   func() time.Time
}

// NewTracker returns an empty Tracker.
func NewTracker() *Tracker {
	return &Tracker{
		nodes: make(map[string]*Node),
		ipMAC: make(map[netip.Addr]string),
		now:   time.Now,
	}
}

// Mark records that a node reached stage. mac may be nil when only the IP
// is known (TFTP, HTTP): the report is then attributed to the MAC last seen
// with that IP, or kept under the IP alone until a report carrying both
// arrives. A report with neither a MAC nor a valid IP is dropped.
func (t *Tracker) Mark(mac net.HardwareAddr, ip netip.Addr, stage, detail string) {
	ip = ip.Unmap() // a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
	if len(mac) == 0 && !ip.IsValid() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()

	var key string
	switch {
	case len(mac) > 0:
		key = contract.MACString(mac)
		if ip.IsValid() {
			t.bind(key, ip)
		}
	default:
		if m, ok := t.ipMAC[ip]; ok {
			key = m
		} else {
			key = ipKey(ip)
		}
	}

	n := t.nodes[key]
	if n == nil {
		n = &Node{}
		if len(mac) > 0 {
			n.MAC = key
		}
		t.nodes[key] = n
	}
	if ip.IsValid() {
		n.IP = ip.String()
	}
	n.Stage, n.Detail, n.Updated = stage, detail, now
	n.History = appendBounded(n.History, Event{Stage: stage, Detail: detail, At: now})
}

// bind records that ip now belongs to macKey and folds any reports that
// were kept under the bare IP into that MAC's node, so a node's history is
// complete even if HTTP saw it before DHCP told us its MAC (e.g. after a
// head restart with nodes still running).
func (t *Tracker) bind(macKey string, ip netip.Addr) {
	if old, ok := t.ipMAC[ip]; ok && old == macKey {
		return
	}
	t.ipMAC[ip] = macKey
	// Drop the mapping of this MAC's previous address, unless another MAC
	// has taken that address meanwhile.
	if n := t.nodes[macKey]; n != nil && n.IP != "" {
		if prev, err := netip.ParseAddr(n.IP); err == nil && prev != ip && t.ipMAC[prev] == macKey {
			delete(t.ipMAC, prev)
		}
	}
	orphan := t.nodes[ipKey(ip)]
	if orphan == nil {
		return
	}
	delete(t.nodes, ipKey(ip))
	n := t.nodes[macKey]
	if n == nil {
		orphan.MAC = macKey
		t.nodes[macKey] = orphan
		return
	}
	merged := append(slices.Clone(orphan.History), n.History...)
	slices.SortStableFunc(merged, func(a, b Event) int { return a.At.Compare(b.At) })
	if len(merged) > MaxHistory {
		merged = merged[len(merged)-MaxHistory:]
	}
	n.History = merged
	if orphan.Updated.After(n.Updated) {
		n.Stage, n.Detail, n.Updated = orphan.Stage, orphan.Detail, orphan.Updated
	}
}

// MAC returns the MAC address last seen with ip, or nil if none was.
func (t *Tracker) MAC(ip netip.Addr) net.HardwareAddr {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.ipMAC[ip.Unmap()]
	if !ok {
		return nil
	}
	hw, err := net.ParseMAC(m)
	if err != nil {
		return nil
	}
	return hw
}

// Nodes returns a snapshot of every node, sorted by IP address (nodes
// without an IP last, then by MAC). The result shares no memory with the
// tracker.
func (t *Tracker) Nodes() []Node {
	t.mu.Lock()
	out := make([]Node, 0, len(t.nodes))
	for _, n := range t.nodes {
		c := *n
		c.History = slices.Clone(n.History)
		if c.History == nil {
			c.History = []Event{} // JSON "[]" rather than null
		}
		out = append(out, c)
	}
	t.mu.Unlock()
	slices.SortFunc(out, compareNodes)
	return out
}

func compareNodes(a, b Node) int {
	ia, ea := netip.ParseAddr(a.IP)
	ib, eb := netip.ParseAddr(b.IP)
	switch {
	case ea == nil && eb == nil:
		if c := ia.Compare(ib); c != 0 {
			return c
		}
	case ea == nil:
		return -1
	case eb == nil:
		return 1
	}
	return strings.Compare(a.MAC, b.MAC)
}

func ipKey(ip netip.Addr) string { return "ip:" + ip.String() }

func appendBounded(h []Event, e Event) []Event {
	if len(h) >= MaxHistory {
		// Shift in place rather than reslicing so the backing array does
		// not creep forward and reallocate forever.
		copy(h, h[len(h)-MaxHistory+1:])
		h = h[:MaxHistory-1]
	}
	return append(h, e)
}
