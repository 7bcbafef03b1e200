// Package uplink is node1's way out for the nodes: when the head serves
// addresses on a private cluster network and node1 has another interface
// with a route to the outside (its uplink), the nodes reach the outside
// through node1. node1 forwards the cluster subnet out of the uplink with
// source NAT (nftables masquerade), forwards nothing else between the two,
// and hands itself out as the nodes' router and its own upstream DNS
// servers as theirs.
//
// This package holds the decision (Decide, from cluster.toml's network.nat
// and what node1's routing table shows), the nftables rules (Ruleset) and
// node1's upstream resolvers (Resolvers, from resolv.conf or
// systemd-resolved's list). The head applies them through its System.
package uplink

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Mode is cluster.toml's network.nat.
type Mode string

// The modes.
const (
	// ModeAuto (the default) forwards the nodes out when node1 has an
	// uplink and serves addresses itself.
	ModeAuto Mode = "auto"
	// ModeOn forwards the nodes out, and the head refuses to start
	// without an uplink.
	ModeOn Mode = "on"
	// ModeOff never forwards.
	ModeOff Mode = "off"
)

// Modes lists the modes, the default first.
var Modes = []Mode{ModeAuto, ModeOn, ModeOff}

// ParseMode checks a NAT mode: the one rule for network.nat and the head's
// option. "" is ModeAuto.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return ModeAuto, nil
	}
	for _, m := range Modes {
		if Mode(s) == m {
			return m, nil
		}
	}
	return "", fmt.Errorf("NAT mode %q is not %q, %q or %q", s, ModeAuto, ModeOn, ModeOff)
}

// Route is one IPv4 default route of node1.
type Route struct {
	Interface string
	Gateway   netip.Addr // invalid for a route without one (point-to-point)
	Metric    int
}

// Situation is what the decision looks at.
type Situation struct {
	Mode Mode
	// Cluster is the cluster interface and Subnet the cluster network.
	Cluster string
	Subnet  netip.Prefix
	// ServesAddresses is true when the head hands out the nodes' addresses
	// (DHCP server mode, or auto mode on a network without another DHCP
	// server): only then can it make itself their router. On a LAN with
	// its own DHCP server the nodes have that LAN's router.
	ServesAddresses bool
	// Gateway is a router configured for the nodes (network.gateway): the
	// way out is that router's business, not node1's.
	Gateway netip.Addr
	// Routes are node1's IPv4 default routes.
	Routes []Route
}

// Plan is the decision: NAT out of Out, or not, and why.
type Plan struct {
	// Out is the uplink, "" when the nodes are not forwarded.
	Out string
	// Subnet is the cluster network that is forwarded out of Out.
	Subnet netip.Prefix
	// Cluster is the cluster interface.
	Cluster string
	// Why says in a few words why the nodes are or are not forwarded.
	Why string
}

// On reports whether the plan forwards the nodes.
func (p Plan) On() bool { return p.Out != "" }

// ErrNoUplink is wrapped by Decide's error when network.nat is "on" and
// node1 has no uplink.
var ErrNoUplink = fmt.Errorf("no way out")

// Decide decides whether node1 forwards the nodes out, and out of which
// interface: the one with node1's best default route (lowest metric) that
// is not the cluster interface. With ModeOn and no such interface it fails
// (wrapping ErrNoUplink) and says what it found; on a LAN whose DHCP server
// hands out the nodes' addresses (and router) there is nothing to forward,
// whatever the mode.
func Decide(s Situation) (Plan, error) {
	p := Plan{Subnet: s.Subnet.Masked(), Cluster: s.Cluster}
	var out *Route
	var onCluster bool
	routes := slices.Clone(s.Routes)
	slices.SortStableFunc(routes, func(a, b Route) int { return a.Metric - b.Metric })
	for i, r := range routes {
		if r.Interface == s.Cluster {
			onCluster = true
			continue
		}
		if out == nil {
			out = &routes[i]
		}
	}
	switch s.Mode {
	case ModeOff:
		p.Why = "network.nat is off"
		return p, nil
	case ModeOn:
		switch {
		case !s.ServesAddresses:
			// An image made for a room with an uplink still works on a
			// LAN, where the LAN's router is the way out.
			p.Why = "the nodes get their router from the LAN's DHCP server (network.nat = \"on\" has nothing to do there)"
			return p, nil
		case s.Gateway.IsValid():
			return p, fmt.Errorf("%w: network.nat is on, and network.gateway names another router (%s) for the nodes; set one of them", ErrNoUplink, s.Gateway)
		case out == nil && onCluster:
			return p, fmt.Errorf("%w: network.nat is on, but node1's only default route is on the cluster interface %s; node1 needs another interface with a route to the outside", ErrNoUplink, s.Cluster)
		case out == nil:
			return p, fmt.Errorf("%w: network.nat is on, but node1 has no default route on an interface other than the cluster interface %s (plug in the uplink and let it get an address, or set network.nat = \"auto\")", ErrNoUplink, s.Cluster)
		}
	default:
		switch {
		case !s.ServesAddresses:
			p.Why = "the nodes get their router from the LAN's DHCP server"
			return p, nil
		case s.Gateway.IsValid():
			p.Why = "network.gateway gives the nodes " + s.Gateway.String() + " as their router"
			return p, nil
		case out == nil:
			p.Why = "node1 has no uplink (no default route on another interface)"
			return p, nil
		}
	}
	p.Out = out.Interface
	p.Why = "node1's default route"
	if out.Gateway.IsValid() {
		p.Why += " via " + out.Gateway.String()
	}
	p.Why += " is on " + out.Interface
	return p, nil
}

// Table is the nftables table that holds node1's forwarding rules; Ruleset
// replaces it whole.
const Table = "clusterdebian"

// Ruleset returns the nft(8) script that puts p in place atomically: it
// replaces the table (nft applies a script as one transaction, so the
// forwarding never stops while the rules change), or, for a plan that
// forwards nothing, removes it. The rules:
//
//   - postrouting: packets from the cluster subnet that leave by the uplink
//     take node1's address there (masquerade);
//   - forward: from the cluster interface to the uplink only from the
//     cluster subnet; from the uplink to the cluster interface only
//     answers (established, related); nothing else between the two. Other
//     forwarding of node1 is none of this table's business (policy accept:
//     a packet must pass every table's chain).
func Ruleset(p Plan) string {
	var b strings.Builder
	// "add table" then "delete table" empties any old one without failing
	// when there was none.
	fmt.Fprintf(&b, "add table ip %s\ndelete table ip %s\n", Table, Table)
	if !p.On() {
		return b.String()
	}
	in, out, subnet := quote(p.Cluster), quote(p.Out), p.Subnet.Masked().String()
	fmt.Fprintf(&b, `table ip %s {
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname %s oifname %s ip saddr %s accept
		iifname %s oifname %s drop
		iifname %s oifname %s ct state established,related accept
		iifname %s oifname %s drop
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %s ip saddr %s masquerade
	}
}
`, Table, in, out, subnet, in, out, out, in, out, in, out, subnet)
	return b.String()
}

// quote writes an interface name as an nft string.
func quote(name string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name) + `"`
}

// Resolvers returns node1's upstream DNS servers for the nodes, from
// resolv.conf's nameserver lines; when those point at systemd-resolved's
// stub (127.0.0.53), from resolved's own list of upstream servers
// (/run/systemd/resolve/resolv.conf, passed as resolved; nil when absent).
// Loopback addresses are never returned: on a node they would be the
// node itself. Nor IPv6 ones: the cluster network is IPv4.
func Resolvers(resolvConf, resolved []byte) []netip.Addr {
	servers := nameservers(resolvConf)
	stub := false
	for _, s := range servers {
		stub = stub || s.IsLoopback()
	}
	if stub && resolved != nil {
		servers = append(servers, nameservers(resolved)...)
	}
	var out []netip.Addr
	for _, s := range servers {
		if s.Is4() && !s.IsLoopback() && !s.IsUnspecified() && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// nameservers reads the nameserver lines of a resolv.conf(5).
func nameservers(data []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		// An IPv6 address may carry a zone; IPv4 ones never do.
		if a, err := netip.ParseAddr(f[1]); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}
