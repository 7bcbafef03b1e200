package head

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/uplink"
)

// usable says why a link cannot be the cluster interface, or "" if it can.
func (l Link) usable() string {
	switch {
	case l.Loopback:
		return "loopback"
	case !l.Ether:
		return "not ethernet"
	case l.Wireless:
		// A cluster runs on a switch; wifi is the way to the outside, if any.
		return "wireless"
	case l.Slave:
		return "part of a bridge or bond"
	case !l.Physical && !l.Bridge:
		// veths, taps, tunnels and the like belong to containers and VMs.
		return "virtual"
	case !l.Up:
		return "down"
	case !l.Carrier:
		return "no cable"
	}
	return ""
}

// wiredCard reports whether l is a wired network card: what a place
// (contract.InterfaceChoice.Index) counts.
func (l Link) wiredCard() bool {
	return l.Ether && l.Physical && !l.Wireless && !l.Loopback && !l.Bridge
}

// candidates returns the links that can be the cluster interface (wired,
// physical or a bridge, connected), and why each other one cannot.
func candidates(links []Link) (ok, seen []string) {
	for _, l := range links {
		if l.Loopback {
			continue
		}
		if why := l.usable(); why != "" {
			seen = append(seen, fmt.Sprintf("%s (%s)", l.Name, why))
			continue
		}
		ok = append(ok, l.Name)
	}
	return ok, seen
}

// chooseInterface picks the cluster interface among links when it is the
// only candidate (wired, physical or a bridge, connected). With none it
// says what it saw; with several it refuses (errSeveral), and
// detectInterface looks closer. The errors are *inputerr.Error for
// Options.Interface.
func chooseInterface(links []Link) (string, error) {
	ok, seen := candidates(links)
	switch len(ok) {
	case 1:
		return ok[0], nil
	case 0:
		if len(seen) == 0 {
			seen = []string{"none"}
		}
		return "", optionErrorf(InputInterface, "no connected wired network interface for the cluster network (interfaces: %s); "+
			"plug the cluster switch in, or name the interface", strings.Join(seen, ", "))
	}
	return "", optionErrorf(InputInterface, "several connected network interfaces: %s; the head will not guess which one is the cluster network "+
		"(it serves DHCP there): name it", strings.Join(ok, ", "))
}

// ifaceFacts is what the head learns about a candidate when there are
// several: the cluster network is the one where nobody else serves.
type ifaceFacts struct {
	name string
	// route is set when one of node1's default routes goes out there.
	route bool
	// server is another DHCP server that answered node1's probe there.
	server netip.Addr
	// probeErr is set when the probe failed: nothing is known.
	probeErr error
}

// quiet reports whether nothing speaks against f being the cluster network.
func (f ifaceFacts) quiet() bool { return !f.route && !f.server.IsValid() && f.probeErr == nil }

func (f ifaceFacts) String() string {
	var what []string
	if f.server.IsValid() {
		what = append(what, "DHCP server "+f.server.String())
	}
	if f.route {
		what = append(what, "default route")
	}
	if f.probeErr != nil {
		what = append(what, "probe failed: "+f.probeErr.Error())
	}
	if len(what) == 0 {
		what = []string{"no DHCP server, no default route"}
	}
	return f.name + ": " + strings.Join(what, ", ")
}

// chooseQuiet picks the cluster interface among several candidates: the
// only one where no other DHCP server answered and no default route goes
// (the others lead to a LAN or to the outside). When that is not exactly
// one, it refuses and says what it found and how to choose; its error is
// an *inputerr.Error for Options.Interface.
func chooseQuiet(facts []ifaceFacts) (name, why string, err error) {
	var quiet, all []string
	for _, f := range facts {
		all = append(all, f.String())
		if f.quiet() {
			quiet = append(quiet, f.name)
		}
	}
	how := "name it: network.interface in cluster.toml, or at boot the menu entry \"ClusterDebian, cluster network on a chosen card\" or the kernel parameter " +
		contract.ParamInterface + "=<name, MAC or 1, 2, 3>"
	switch len(quiet) {
	case 1:
		return quiet[0], "the only connected wired interface with no other DHCP server and no default route (" + strings.Join(all, "; ") + ")", nil
	case 0:
		return "", "", optionErrorf(InputInterface, "several connected network interfaces, and on each another DHCP server answers or a default route goes (%s): "+
			"the head will not guess which one is the cluster network; %s", strings.Join(all, "; "), how)
	}
	return "", "", optionErrorf(InputInterface, "several connected network interfaces look alike (%s): the head will not guess which one is the cluster network "+
		"(it may serve DHCP there); %s", strings.Join(all, "; "), how)
}

// resolveChoice finds the interface a choice names among links: by name
// (which need not be listed: the head's later steps say when it does not
// exist), by MAC, or by place among the wired cards in the kernel's order.
// input is the Options field the choice came from, for the error.
func resolveChoice(links []Link, c contract.InterfaceChoice, input string) (string, error) {
	switch {
	case c.Name != "":
		return c.Name, nil
	case c.MAC != nil:
		var found []Link
		for _, l := range links {
			if contract.MACString(l.MAC) == contract.MACString(c.MAC) {
				found = append(found, l)
			}
		}
		// A bridge takes a port's MAC; the port itself is not the one.
		found = slices.DeleteFunc(found, func(l Link) bool { return l.Slave && len(found) > 1 })
		if len(found) == 0 {
			return "", optionErrorf(input, "no network interface has the MAC %s (%s)", contract.MACString(c.MAC), listMACs(links))
		}
		return found[0].Name, nil
	case c.Index > 0:
		var cards []Link
		for _, l := range links {
			if l.wiredCard() {
				cards = append(cards, l)
			}
		}
		slices.SortFunc(cards, func(a, b Link) int { return a.Index - b.Index })
		if c.Index > len(cards) {
			return "", optionErrorf(input, "%s does not exist: this machine has %d wired cards (%s)", c.Describe(), len(cards), listMACs(cards))
		}
		l := cards[c.Index-1]
		if l.Slave {
			return "", optionErrorf(input, "%s, %s, is part of a bridge or bond: name the bridge or bond instead", c.Describe(), l.Name)
		}
		return l.Name, nil
	}
	return "", optionErrorf(input, "no interface chosen")
}

// listMACs lists links with their MACs, for errors: "eth0 52:54:...".
func listMACs(links []Link) string {
	var s []string
	for _, l := range links {
		if l.Loopback {
			continue
		}
		s = append(s, strings.TrimSpace(l.Name+" "+contract.MACString(l.MAC)))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// detectInterface returns the cluster interface of sys, and why: the one
// connected, wired interface; among several, the one where no other DHCP
// server answers and no default route goes (chooseQuiet). Otherwise an
// error that lists the candidates and says how to choose.
//
// At boot nothing has brought the wired interfaces up yet, and a link that is
// down shows no carrier; so when none is connected, the physical wired ones
// are brought up (no address is set) and given a few seconds to see one.
//
// facts are what the head learnt of each candidate when there were several
// (nil otherwise): planNAT waits on those where a DHCP server answered.
func detectInterface(ctx context.Context, sys System) (name, why string, facts []ifaceFacts, err error) {
	links, err := sys.Links()
	if err != nil {
		return "", "", nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	ok, _ := candidates(links)
	if len(ok) == 0 {
		raised := false
		for _, l := range links {
			if !l.Up && l.wiredCard() {
				if sys.LinkUp(ctx, l.Name) == nil {
					raised = true
				}
			}
		}
		if raised {
			for range 10 {
				time.Sleep(500 * time.Millisecond)
				if links, err = sys.Links(); err != nil {
					return "", "", nil, fmt.Errorf("listing network interfaces: %w", err)
				}
				if ok, _ = candidates(links); len(ok) > 0 {
					break
				}
			}
		}
	}
	switch len(ok) {
	case 0:
		_, err := chooseInterface(links)
		return "", "", nil, err
	case 1:
		return ok[0], "the only connected wired interface", nil, nil
	}
	facts, err = gatherFacts(ctx, sys, ok)
	if err != nil {
		return "", "", nil, err
	}
	name, why, err = chooseQuiet(facts)
	return name, why, facts, err
}

// gatherFacts probes every candidate for another DHCP server at once (a
// few seconds in all) and looks up node1's default routes.
func gatherFacts(ctx context.Context, sys System, names []string) ([]ifaceFacts, error) {
	routes, err := sys.DefaultRoutes()
	if err != nil {
		return nil, fmt.Errorf("reading the routing table: %w", err)
	}
	facts := make([]ifaceFacts, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		facts[i].name = n
		facts[i].route = slices.ContainsFunc(routes, func(r uplink.Route) bool { return r.Interface == n })
		wg.Go(func() {
			server, found, err := sys.ProbeDHCP(ctx, n)
			if found {
				facts[i].server = server
			}
			facts[i].probeErr = err
		})
	}
	wg.Wait()
	return facts, ctx.Err()
}

// waitCarrier waits up to limit for iface to see a carrier: a card brought
// up (again) needs a few seconds to negotiate its link, and DHCP sent
// before that is lost.
func waitCarrier(ctx context.Context, sys System, iface string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if links, err := sys.Links(); err == nil {
			for _, l := range links {
				if l.Name == iface && l.Carrier {
					return true
				}
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// InterfaceAddrs returns the IPv4 addresses (with prefix) on iface.
func InterfaceAddrs(iface string) ([]netip.Prefix, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || !ip.Unmap().Is4() {
			continue
		}
		bits, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), bits))
	}
	return out, nil
}
