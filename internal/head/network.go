package head

// The head's cluster network: which interface, which address and subnet,
// which DHCP mode, and the way out. New decides it (planNetwork) and Serve
// keeps it (runNetwork): it renews node1's lease on a LAN, watches for
// another DHCP server that shows up later, and tells what it decided, and
// why, at /api/v1/network, in contract.NetworkFile and on the login banner.
//
// node1's address, first match wins:
//
//  1. Options.Address (cluster.toml network.address): an administrator
//     said so. The cluster network is that address's network.
//  2. A permanent address already on the interface that the head did not
//     put there (configured by hand, by ifupdown, by localnode1): one in
//     Options.Subnet first, else any other; the cluster network is
//     Options.Subnet, or that address's network.
//  3. In DHCP mode auto or proxy, a lease from a DHCP server of the LAN:
//     the head asks from the interface's own MAC under the name node1, as
//     any machine there would. If a server answers, the LAN is the cluster
//     network for this boot, the head serves proxyDHCP there pointing at
//     its leased address, and keeps the lease renewed.
//  4. .1 of Options.Subnet, which the head adds (and records in
//     contract.NetworkFile, so that its next start this boot does not take
//     it for an administrator's).
//
// Another DHCP server that shows itself only after the head started as a
// full server (one that answers only machines it knows, say) makes the DHCP
// server hand out no more addresses (dhcp's sticky proxy). The head then
// says so loudly, and, when no node runs from it yet, moves the cluster to
// that LAN: it takes a lease there and starts again on it (Run). With
// nodes running it stays, so as not to cut them off, and says what to do.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcpclient"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/uplink"
)

// addrSource says where node1's address came from (registry.Network's
// AddressSource).
type addrSource string

const (
	srcConfigured addrSource = "configured"
	srcInterface  addrSource = "interface"
	srcLease      addrSource = "lease"
	srcDefault    addrSource = "default"
)

// carrierWait bounds the wait for a link to come up after the head took it
// over.
const carrierWait = 10 * time.Second

// netPlan is the decided cluster network.
type netPlan struct {
	iface    string
	ifaceWhy string
	// addr is node1's address with the cluster network's prefix length.
	addr   netip.Prefix
	source addrSource
	// lease is node1's lease when source is srcLease.
	lease dhcpclient.Lease
	// mode is what the DHCP server is started in.
	mode dhcp.Mode
	// added are the addresses the head put on interfaces this boot.
	added []netip.Prefix
	// nat is the way out; router and dns go to the nodes.
	nat    uplink.Plan
	router netip.Addr
	dns    []netip.Addr
	// warning is what the plan could not do, for the status.
	warning string
	// pendingUplinks are the other interfaces where a DHCP server answered
	// node1's probe but no default route goes yet: the system's own DHCP
	// client may still be taking its lease there (planNAT waits for it).
	pendingUplinks []string
}

// uplinkWait bounds planNAT's wait for a default route on a pending
// uplink. At boot, udev may show a second card after the head started
// (a slow driver, firmware to load, a loaded machine), and its DHCP client
// then takes a few seconds more.
var uplinkWait = 45 * time.Second

// subnet is the cluster network.
func (p netPlan) subnet() netip.Prefix { return p.addr.Masked() }

// pickAddress applies rules 1 and 2 of the address (see the top of this
// file) to the addresses the interface has: a configured address, else a
// permanent one the head did not add (ours), in subnet first. ok is false
// when neither applies: the lease or the default decide.
func pickAddress(have []IfAddr, configured, subnet netip.Prefix, ours []netip.Prefix) (netip.Prefix, addrSource, bool) {
	if configured.IsValid() {
		return configured, srcConfigured, true
	}
	var other netip.Prefix
	for _, a := range have {
		ip := a.Addr()
		if a.Dynamic || ip.IsLinkLocalUnicast() || ip.IsLoopback() || slices.Contains(ours, a.Prefix) {
			continue
		}
		if subnet.Contains(ip) && ip != subnet.Addr() && ip != contract.Broadcast(subnet) {
			return netip.PrefixFrom(ip, subnet.Bits()), srcInterface, true
		}
		if !other.IsValid() && contract.CheckSubnet(a.Masked()) == nil && ip != a.Masked().Addr() {
			other = a.Prefix
		}
	}
	if other.IsValid() {
		return other, srcInterface, true
	}
	return netip.Prefix{}, "", false
}

// previousNetwork reads what the head wrote in contract.NetworkFile earlier
// this boot (nothing after a reboot: RunDir is in RAM).
func (h *Head) previousNetwork() (registry.Network, bool) {
	path := h.runPath(contract.NetworkFile)
	if path == "" {
		return registry.Network{}, false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return registry.Network{}, false
	}
	var n registry.Network
	if json.Unmarshal(data, &n) != nil {
		return registry.Network{}, false
	}
	return n, true
}

// runPath is a file in the cluster root's RunDir, or "" when the head
// keeps no cluster root (tests, benchmarks).
func (h *Head) runPath(name string) string {
	if h.opts.ClusterRoot == "" {
		return ""
	}
	return filepath.Join(h.opts.ClusterRoot, contract.RunDir, name)
}

// planNetwork decides the cluster network (see the top of this file):
// interface, address and subnet, DHCP mode, and the way out. It takes the
// interface over from the system's own DHCP client and puts the address
// in place.
func (h *Head) planNetwork(ctx context.Context) (netPlan, error) {
	o := h.opts
	var p netPlan
	var err error
	switch {
	case o.BootInterface != "":
		p.iface, p.ifaceWhy, err = h.chosenInterface(o.BootInterface, InputBootInterface, contract.ParamInterface+"="+o.BootInterface+" on node1's kernel command line")
	case o.Interface != "":
		p.iface, p.ifaceWhy, err = h.chosenInterface(o.Interface, InputInterface, "configured ("+o.Interface+")")
	default:
		var facts []ifaceFacts
		p.iface, p.ifaceWhy, facts, err = detectInterface(ctx, h.sys)
		for _, f := range facts {
			if f.name != p.iface && f.server.IsValid() && !f.route {
				p.pendingUplinks = append(p.pendingUplinks, f.name)
			}
		}
	}
	if err != nil {
		return p, err
	}
	h.log.Info("cluster interface", "iface", p.iface, "why", p.ifaceWhy)

	prev, _ := h.previousNetwork()
	var ours []netip.Prefix
	for _, a := range prev.Added {
		if pf, err := netip.ParsePrefix(a); err == nil {
			ours = append(ours, pf)
		}
	}
	var prevLease netip.Addr
	if prev.Lease != nil && prev.Interface == p.iface {
		prevLease, _ = netip.ParseAddr(prev.Address)
	}

	have, err := h.sys.Addrs(p.iface)
	if err != nil {
		return p, optionError(InputInterface, fmt.Errorf("interface %s: %w", p.iface, err))
	}
	addr, src, ok := pickAddress(have, o.Address, o.Subnet, ours)
	if src != srcInterface {
		// The head sets the address here, maybe with a DHCP client of its
		// own: no other client may run on it. (An address the system
		// configured is the system's business.)
		h.claimInterface(p.iface)
		released, err := h.sys.ReleaseInterface(ctx, p.iface)
		if err != nil {
			h.log.Warn("could not stop the system's DHCP client on the cluster interface; it may fight the head's", "iface", p.iface, "err", err)
		} else if released {
			h.log.Info("stopped the system's DHCP client on the cluster interface: the head takes its address itself", "iface", p.iface)
		}
	}
	if err := h.sys.LinkUp(ctx, p.iface); err != nil {
		return p, err
	}
	p.mode = o.DHCP
	switch {
	case ok:
		p.addr, p.source = addr, src
	case o.adopt != nil:
		p.addr, p.source, p.lease = o.adopt.Addr, srcLease, *o.adopt
	case o.DHCP == dhcp.ModeAuto || o.DHCP == dhcp.ModeProxy:
		if !waitCarrier(ctx, h.sys, p.iface, carrierWait) {
			h.log.Warn("no carrier on the cluster interface yet", "iface", p.iface)
		}
		l, err := h.takeLease(ctx, p.iface, prevLease)
		switch {
		case err == nil:
			p.addr, p.source, p.lease = l.Addr, srcLease, l
		case o.DHCP == dhcp.ModeProxy:
			p.warning = "network.dhcp is proxy, but no DHCP server gave node1 an address here (" + err.Error() + "): machines that get addresses from another network cannot reach node1; set network.address to node1's address on that network"
			h.log.Warn("proxy mode without an address from the LAN's DHCP server", "iface", p.iface, "err", err)
		case errors.Is(err, errNoDHCPClient):
			// Nothing was asked; auto mode's own probe decides.
			h.log.Warn("node1 could not ask the LAN for an address", "iface", p.iface, "err", err)
		case !errors.Is(err, dhcpclient.ErrNoAnswer):
			// A server answered but gave nothing usable: it is there, so
			// the head must not hand out addresses.
			p.mode = dhcp.ModeProxy
			p.warning = "a DHCP server answered node1, but its lease is unusable (" + err.Error() + "): node1 hands out no addresses; set network.address to node1's address on that network"
			h.log.Warn("the LAN's lease is unusable; proxyDHCP on the default network", "iface", p.iface, "err", err)
		}
	}
	if !p.addr.IsValid() {
		p.addr, p.source = netip.PrefixFrom(o.Subnet.Addr().Next(), o.Subnet.Bits()), srcDefault
	}
	if p.source == srcLease {
		p.mode = dhcp.ModeProxy
	}
	if err := h.placeAddress(ctx, &p, have, ours); err != nil {
		return p, err
	}
	if err := h.planNAT(ctx, &p); err != nil {
		return p, err
	}
	return p, nil
}

// chosenInterface resolves an interface someone chose (input names the
// Options field for errors); why says who chose it.
func (h *Head) chosenInterface(choice, input, why string) (string, string, error) {
	c, err := contract.ParseInterfaceChoice(choice)
	if err != nil {
		return "", "", optionError(input, err)
	}
	if c.Name != "" {
		return c.Name, why, nil
	}
	links, err := h.sys.Links()
	if err != nil {
		return "", "", fmt.Errorf("listing network interfaces: %w", err)
	}
	name, err := resolveChoice(links, c, input)
	return name, why + ": " + c.Describe(), err
}

// errNoDHCPClient: node1's DHCP client could not ask at all.
var errNoDHCPClient = errors.New("no DHCP client")

// takeLease asks the LAN's DHCP server for an address for node1, asking
// for prefer (its address before a restart of the head) when valid. A
// lease whose network the cluster cannot use (wider than /8, narrower
// than /30) is an error.
func (h *Head) takeLease(ctx context.Context, iface string, prefer netip.Addr) (dhcpclient.Lease, error) {
	ex, err := h.sys.DHCPClient(iface, contract.HeadName)
	if err != nil {
		return dhcpclient.Lease{}, fmt.Errorf("%w on %s: %w", errNoDHCPClient, iface, err)
	}
	k := &dhcpclient.Keeper{Exchanger: ex, Log: h.log}
	l, err := k.Acquire(ctx, prefer)
	if err != nil {
		answered := errors.Is(err, dhcpclient.ErrLost) || errors.Is(err, dhcpclient.ErrUnusable) || errors.Is(err, dhcpclient.ErrNoAnswer)
		if !answered && ctx.Err() == nil {
			// The exchange itself failed (a socket, the link): nothing
			// was learnt about the LAN.
			return l, fmt.Errorf("%w on %s: %w", errNoDHCPClient, iface, err)
		}
		return l, err
	}
	if err := contract.CheckSubnet(l.Addr.Masked()); err != nil {
		return l, fmt.Errorf("the lease %v from %v: %w", l.Addr, l.Server, err)
	}
	if !l.Addr.Masked().Contains(l.Server) {
		h.log.Info("the LAN's DHCP server is on another network (a relay serves this one)", "server", l.Server, "lease", l.Addr)
	}
	h.log.Info("node1 took an address on the LAN from its DHCP server", "iface", iface, "lease", l.String(), "router", l.Router, "dns", l.DNS)
	return l, nil
}

// placeAddress puts the plan's address on the interface (a lease's with its
// lifetime), takes off the addresses the head put on interfaces earlier
// this boot that the plan no longer uses, and, for a lease, gives node1 the
// LAN's router and DNS servers when it has no way out of its own.
func (h *Head) placeAddress(ctx context.Context, p *netPlan, have []IfAddr, ours []netip.Prefix) error {
	present := slices.ContainsFunc(have, func(a IfAddr) bool { return a.Prefix == p.addr })
	switch p.source {
	case srcLease:
		if err := h.sys.SetLeaseAddr(ctx, p.iface, p.addr, p.lease.Remaining(time.Now())); err != nil {
			return err
		}
	case srcConfigured, srcDefault:
		if !present {
			if err := h.sys.AddAddr(ctx, p.iface, p.addr); err != nil {
				return err
			}
		}
		if !present || slices.Contains(ours, p.addr) {
			p.added = append(p.added, p.addr)
		}
	}
	for _, a := range ours {
		if a == p.addr || !slices.ContainsFunc(have, func(x IfAddr) bool { return x.Prefix == a }) {
			continue
		}
		// The cluster moved (to a LAN, or to a configured address): the
		// old one would keep a route to a network node1 no longer serves.
		if err := h.sys.DelAddr(ctx, p.iface, a); err != nil {
			h.log.Warn("could not remove the head's earlier address", "iface", p.iface, "addr", a, "err", err)
		} else {
			h.log.Info("removed the head's earlier address", "iface", p.iface, "addr", a)
		}
	}
	h.log.Info("node1's address on the cluster network", "iface", p.iface, "addr", p.addr, "source", string(p.source))
	if p.source != srcLease {
		return nil
	}
	routes, err := h.sys.DefaultRoutes()
	if err != nil || len(routes) > 0 || !p.lease.Router.IsValid() {
		return nil
	}
	// As any machine on that LAN: its router is node1's way out, its DNS
	// servers node1's (and so, through the shared root, the nodes').
	if err := h.sys.AddDefaultRoute(ctx, p.iface, p.lease.Router); err != nil {
		h.log.Warn("could not add the LAN's router as node1's default route", "router", p.lease.Router, "err", err)
	}
	if len(p.lease.DNS) > 0 {
		if err := h.sys.SetResolvers(ctx, p.lease.DNS, p.lease.Domain,
			"Written by the clusterdebian head from node1's DHCP lease on "+p.iface+" ("+p.lease.Server.String()+")"); err != nil {
			h.log.Warn("DNS servers from the lease not set", "err", err)
		}
	}
	return nil
}

// planNAT decides the way out (uplink.Decide) and puts it in place: the
// nftables table, forwarding, and node1 as the nodes' router with its own
// upstream resolvers as their DNS. The table stays when the head stops, so
// that a restart does not cut the nodes' connections off; every start
// replaces or removes it.
func (h *Head) planNAT(ctx context.Context, p *netPlan) error {
	o := h.opts
	p.router, p.dns = o.Router, o.DNS
	if p.router.IsValid() && !p.subnet().Contains(p.router) {
		// Configured for another network than the one node1 is on this
		// boot (a LAN's): no node could reach it.
		h.log.Warn("the configured gateway is outside this boot's cluster network; not handed out", "gateway", p.router, "subnet", p.subnet())
		p.router = netip.Addr{}
	}
	if p.source == srcLease {
		// The LAN's DHCP server gives the nodes their router and DNS.
		p.router, p.dns = netip.Addr{}, nil
	}
	routes, err := h.uplinkRoutes(ctx, p)
	if err != nil {
		return fmt.Errorf("reading the routing table: %w", err)
	}
	serves := p.source != srcLease && (p.mode == dhcp.ModeServer || p.mode == dhcp.ModeAuto)
	p.nat, err = uplink.Decide(uplink.Situation{Mode: o.NAT, Cluster: p.iface, Subnet: p.subnet(),
		ServesAddresses: serves, Gateway: p.router, Routes: routes})
	if err != nil {
		return optionError(InputNAT, err)
	}
	if err := h.sys.ApplyNAT(ctx, uplink.Ruleset(p.nat), p.nat.On()); err != nil {
		if !p.nat.On() {
			// Nothing to forward: a missing nft(8) is no matter.
			h.log.Debug("no NAT table to remove", "err", err)
			return nil
		}
		if o.NAT == uplink.ModeOn {
			return optionError(InputNAT, fmt.Errorf("network.nat is on, but the NAT rules could not be loaded: %w", err))
		}
		h.log.Warn("the nodes cannot reach the outside: the NAT rules could not be loaded", "out", p.nat.Out, "err", err)
		p.nat = uplink.Plan{Subnet: p.subnet(), Cluster: p.iface, Why: "the NAT rules could not be loaded: " + err.Error()}
		return nil
	}
	if !p.nat.On() {
		h.log.Info("the nodes are not forwarded out through node1", "why", p.nat.Why)
		return nil
	}
	p.router = p.addr.Addr()
	if len(p.dns) == 0 {
		if p.dns, err = h.sys.Resolvers(); err != nil || len(p.dns) == 0 {
			h.log.Warn("the nodes get no DNS server: node1 has none they can reach (only loopback ones, or none)", "err", err)
		}
	}
	h.log.Info("the nodes reach the outside through node1", "out", p.nat.Out, "why", p.nat.Why, "router", p.router, "dns", p.dns)
	return nil
}

// uplinkRoutes returns node1's default routes. When none goes out of a
// pending uplink (p.pendingUplinks) and NAT is not off, it first waits up
// to uplinkWait for the system's DHCP client to put one there, so that the
// way out is not decided before the uplink's lease came.
func (h *Head) uplinkRoutes(ctx context.Context, p *netPlan) ([]uplink.Route, error) {
	routes, err := h.sys.DefaultRoutes()
	if err != nil || len(p.pendingUplinks) == 0 || h.opts.NAT == uplink.ModeOff {
		return routes, err
	}
	onPending := func(rs []uplink.Route) bool {
		return slices.ContainsFunc(rs, func(r uplink.Route) bool { return slices.Contains(p.pendingUplinks, r.Interface) })
	}
	if onPending(routes) {
		return routes, nil
	}
	h.log.Info("waiting for a default route on an interface where a DHCP server answered (the system's DHCP client may still be taking its lease)",
		"interfaces", p.pendingUplinks, "limit", uplinkWait)
	deadline := time.Now().Add(uplinkWait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return routes, ctx.Err()
		case <-time.After(time.Second / 2):
		}
		if routes, err = h.sys.DefaultRoutes(); err != nil || onPending(routes) {
			return routes, err
		}
	}
	h.log.Warn("no default route came on the interfaces where a DHCP server answered", "interfaces", p.pendingUplinks, "waited", uplinkWait)
	return routes, nil
}

// claimInterface writes contract.InterfaceFile: the image's ifupdown hook
// starts no DHCP client on that interface from now on.
func (h *Head) claimInterface(iface string) {
	path := h.runPath(contract.InterfaceFile)
	if path == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		err = atomicfile.Write(path, []byte(iface+"\n"), 0o644)
		if err != nil {
			h.log.Warn("could not record the cluster interface", "path", path, "err", err)
		}
	}
}

// netState is what changes while the head runs: the lease, and a move
// that failed.
type netState struct {
	mu    sync.Mutex
	lease dhcpclient.Lease
	// stuck says why the head could not move to the LAN whose DHCP server
	// showed up after it started; "" when it did not try.
	stuck string
	// last is the status last written, to write only changes; said is
	// its summary and warning as last logged.
	last, said string
}

// Network is the head's account of the cluster network (GET
// /api/v1/network, contract.NetworkFile).
func (h *Head) Network() registry.Network {
	p := h.plan
	h.net.mu.Lock()
	lease, stuck := h.net.lease, h.net.stuck
	h.net.mu.Unlock()
	n := registry.Network{
		Interface: p.iface, InterfaceWhy: p.ifaceWhy,
		Address: p.addr.Addr().String(), Subnet: p.subnet().String(),
		AddressSource: string(p.source), ConfiguredMode: string(h.opts.DHCP),
		NATWhy: p.nat.Why, Updated: time.Now(),
	}
	for _, a := range p.added {
		n.Added = append(n.Added, a.String())
	}
	mode := dhcp.ModeOff
	var ev []dhcp.Evidence
	if h.dhcp != nil {
		mode, ev = h.dhcp.Mode(), h.dhcp.Evidence()
	}
	n.Mode = string(mode)
	for _, e := range ev {
		o := registry.OtherDHCPServer{Server: e.Server.String(), Seen: string(e.Kind), Description: describeEvidence(e), Client: e.Client, Time: e.Time}
		if e.Address.IsValid() {
			o.Address = e.Address.String()
		}
		n.OtherServers = append(n.OtherServers, o)
	}
	if p.source == srcLease {
		n.Lease = &registry.NetworkLease{Server: lease.Server.String(), Start: lease.Start, Expires: lease.Expiry(), RenewAt: lease.RenewAt()}
		if lease.Router.IsValid() {
			n.Lease.Router = lease.Router.String()
		}
	}
	if p.nat.On() {
		n.NAT = &registry.NetworkNAT{Out: p.nat.Out}
		for _, d := range p.dns {
			n.NAT.DNS = append(n.NAT.DNS, d.String())
		}
	}
	n.Summary, n.Warning = summarize(p, h.opts.DHCP, mode, ev, lease, stuck)
	return n
}

// serveNetwork answers GET /api/v1/network with Network.
func (h *Head) serveNetwork(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	data, err := json.MarshalIndent(h.Network(), "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(data, '\n'))
}

// summarize says in one line which network node1 serves, in which mode,
// and why; and, in warning, what does not work and what to do.
func summarize(p netPlan, configured, mode dhcp.Mode, ev []dhcp.Evidence, lease dhcpclient.Lease, stuck string) (summary, warning string) {
	subnet := p.subnet()
	warning = p.warning
	switch {
	case p.source == srcLease:
		summary = fmt.Sprintf("proxyDHCP on %v beside the DHCP server %v (it answered node1 and leased it %v)", subnet, lease.Server, p.addr.Addr())
	case mode == dhcp.ModeOff:
		summary = fmt.Sprintf("no DHCP on %v (network.dhcp = off): another DHCP server must send the nodes to node1 at %v", subnet, p.addr.Addr())
	case mode == dhcp.ModeServer && configured == dhcp.ModeServer:
		summary = fmt.Sprintf("DHCP server on %v (network.dhcp = server)", subnet)
		if len(ev) > 0 {
			warning = fmt.Sprintf("another DHCP server, %v, also hands out addresses here (%s): machines may take its addresses and not boot from node1; set network.dhcp = \"auto\"",
				ev[0].Server, describeEvidence(ev[0]))
		}
	case mode == dhcp.ModeServer:
		summary = fmt.Sprintf("DHCP server on %v (no other DHCP server answered node1)", subnet)
	case configured == dhcp.ModeProxy:
		summary = fmt.Sprintf("proxyDHCP on %v (network.dhcp = proxy)", subnet)
		if len(ev) > 0 {
			summary += fmt.Sprintf(" beside the DHCP server %v (%s)", ev[0].Server, describeEvidence(ev[0]))
		}
	case len(ev) == 0:
		summary = fmt.Sprintf("deciding: node1 listens for another DHCP server on %v before it hands out addresses", subnet)
	default:
		summary = fmt.Sprintf("proxyDHCP on %v: the DHCP server %v hands out addresses on this network (%s), so node1 hands out none", subnet, ev[0].Server, describeEvidence(ev[0]))
	}
	if stuck != "" {
		warning = stuck
	}
	if p.source == srcConfigured {
		summary += "; node1 is " + p.addr.String() + " (network.address)"
	}
	if p.nat.On() {
		summary += "; nodes reach the outside through node1 (NAT out of " + p.nat.Out + ")"
	}
	return summary, warning
}

// describeEvidence says how another DHCP server showed itself.
func describeEvidence(e dhcp.Evidence) string {
	addr := ""
	if e.Address.IsValid() {
		addr = " " + e.Address.String()
	}
	switch e.Kind {
	case dhcp.EvidenceProbe:
		return "it answered node1's probe"
	case dhcp.EvidenceOffer:
		return "seen offering" + addr + " to " + e.Client
	case dhcp.EvidenceAck:
		return "seen granting" + addr + " to " + e.Client
	case dhcp.EvidenceNak:
		return "seen refusing an address to " + e.Client
	case dhcp.EvidenceRequest:
		return e.Client + " asked it for" + addr
	}
	return string(e.Kind)
}

// publishNetwork writes the status to contract.NetworkFile when it changed
// (its time aside), and has the login banner show it. force writes anyway.
func (h *Head) publishNetwork(ctx context.Context, force bool) {
	n := h.Network()
	key := n
	key.Updated = time.Time{}
	keyJSON, _ := json.Marshal(key)
	said := n.Summary + "\n" + n.Warning
	h.net.mu.Lock()
	changed := string(keyJSON) != h.net.last
	newSaid := said != h.net.said
	h.net.last, h.net.said = string(keyJSON), said
	h.net.mu.Unlock()
	if !changed && !force {
		return
	}
	if newSaid {
		if n.Warning != "" {
			h.log.Warn("cluster network", "summary", n.Summary, "warning", n.Warning)
		} else {
			h.log.Info("cluster network", "summary", n.Summary)
		}
	}
	path := h.runPath(contract.NetworkFile)
	if path == "" {
		return
	}
	data, _ := json.MarshalIndent(n, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		h.log.Warn("cannot write the network status", "err", err)
		return
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o644); err != nil {
		h.log.Warn("cannot write the network status", "err", err)
		return
	}
	if h.machineRoot() {
		if err := h.sys.RefreshBanner(ctx); err != nil {
			h.log.Debug("login banner not refreshed", "err", err)
		}
	}
}

// statusEvery is how often the head looks whether its network status
// changed (auto mode deciding, a renewal).
const statusEvery = 2 * time.Second

// errMove is what Serve returns to have Run start the head again on a LAN
// (see the top of this file).
type errMove struct {
	lease dhcpclient.Lease
	why   string
}

func (e *errMove) Error() string {
	return "the cluster network moves to the LAN of " + e.lease.Server.String() + ": " + e.why
}

// runNetwork keeps the cluster network until ctx ends: it publishes the
// status, keeps node1's lease, and acts on evidence of another DHCP server
// (evidence, fed by dhcp's OnEvidence). It returns an *errMove when the
// cluster must move to a LAN, else nil.
func (h *Head) runNetwork(ctx context.Context, evidence <-chan dhcp.Evidence) error {
	h.publishNetwork(ctx, true)
	moved := make(chan error, 1)
	if h.plan.source == srcLease {
		go func() { moved <- h.keepLease(ctx) }()
	}
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	tried := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-moved:
			return err
		case ev := <-evidence:
			if !tried && h.opts.DHCP == dhcp.ModeAuto && (h.plan.source == srcDefault || h.plan.source == srcInterface) {
				tried = true
				if err := h.lateServer(ctx, ev); err != nil {
					return err
				}
			}
			h.publishNetwork(ctx, false)
		case <-t.C:
			h.publishNetwork(ctx, false)
		}
	}
}

// lateServer acts on another DHCP server that showed itself after the head
// started handing out addresses (dhcp has stopped that already): it moves
// the cluster to that LAN when the head put node1 at its default address
// and no node runs from it yet; otherwise it says why it stays and what to
// do. It returns an *errMove to move.
func (h *Head) lateServer(ctx context.Context, ev dhcp.Evidence) error {
	h.log.Error("another DHCP server hands out addresses on the cluster network: node1 hands out none from now on, and machines that take its addresses cannot boot from node1 at "+h.addr.String(),
		"other_server", ev.Server, "evidence", describeEvidence(ev), "iface", h.iface)
	stuck := func(why string) error {
		h.net.mu.Lock()
		h.net.stuck = why
		h.net.mu.Unlock()
		h.log.Error("the cluster network stays where it is", "why", why)
		return nil
	}
	if h.plan.source != srcDefault {
		return stuck(fmt.Sprintf("node1's address %v was configured on %s: the head keeps it; if the nodes belong on %v's network, give node1 an address there (network.address)", h.addr, h.iface, ev.Server))
	}
	var running []string
	if h.cluster != nil {
		for _, n := range h.cluster.reg.Nodes() {
			if n.Role == registry.RoleNode && n.State != registry.StateDown {
				running = append(running, n.Name)
			}
		}
	}
	if len(running) > 0 {
		return stuck(fmt.Sprintf("%d nodes run from node1 on %v (%s), and moving would cut them off; once they are done, restart the head (systemctl restart clusterdebian-head): it then takes an address on %v's network",
			len(running), h.naming.Subnet, strings.Join(running, ", "), ev.Server))
	}
	l, err := h.takeLease(ctx, h.iface, netip.Addr{})
	if err != nil {
		mac := "its MAC"
		if h.cluster != nil && h.cluster.mac != "" {
			mac = h.cluster.mac
		}
		return stuck(fmt.Sprintf("%v gave node1 no address (%v); it may answer only machines it knows: have it know node1 (%s), or set network.address to node1's address on its network",
			ev.Server, err, mac))
	}
	return &errMove{lease: l, why: fmt.Sprintf("its DHCP server %v showed itself after the head started (%s), and no node ran from node1 yet", ev.Server, describeEvidence(ev))}
}

// keepLease keeps node1's lease on the LAN: every renewal refreshes the
// address's lifetime. A lost lease is taken again, asking for the same
// address; if the LAN's server gives another one, the cluster moves there
// (an *errMove). It returns nil when ctx ends.
func (h *Head) keepLease(ctx context.Context) error {
	ex, err := h.sys.DHCPClient(h.iface, contract.HeadName)
	if err != nil {
		h.log.Error("no DHCP client to keep node1's lease; it runs out at its end", "err", err)
		<-ctx.Done()
		return nil
	}
	k := &dhcpclient.Keeper{Exchanger: ex, Clock: h.clock, Log: h.log}
	h.net.mu.Lock()
	l := h.net.lease
	h.net.mu.Unlock()
	renewed := func(nl dhcpclient.Lease) {
		if err := h.sys.SetLeaseAddr(ctx, h.iface, nl.Addr, nl.Remaining(time.Now())); err != nil {
			h.log.Error("could not refresh the lease's address", "addr", nl.Addr, "err", err)
		}
		h.net.mu.Lock()
		h.net.lease = nl
		h.net.mu.Unlock()
	}
	for {
		l, err = k.Keep(ctx, l, renewed)
		if ctx.Err() != nil {
			return nil
		}
		h.log.Error("node1's lease on the LAN is lost; asking for it again", "err", err)
		wait := 5 * time.Second
		for {
			nl, err := k.Acquire(ctx, l.Addr.Addr())
			if ctx.Err() != nil {
				return nil
			}
			if err == nil && nl.Addr == l.Addr {
				renewed(nl)
				l = nl
				break
			}
			if err == nil {
				return &errMove{lease: nl, why: fmt.Sprintf("the LAN's DHCP server gave node1 %v in place of %v", nl.Addr, l.Addr)}
			}
			h.log.Warn("no lease yet", "err", err, "next_try", wait)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, time.Minute)
		}
	}
}
