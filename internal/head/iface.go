package head

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"
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

// chooseInterface picks the cluster interface among links: the only one that
// is wired, physical (or a bridge) and connected. It refuses to guess between
// several, because serving DHCP on the wrong network disturbs everyone on it;
// its error is an *inputerr.Error for Options.Interface.
func chooseInterface(links []Link) (string, error) {
	var ok, seen []string
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

// detectInterface returns the one connected, wired interface of sys, or an
// error that lists the candidates and says how to choose.
//
// At boot nothing has brought the wired interfaces up yet, and a link that is
// down shows no carrier; so when none is connected, the physical wired ones
// are brought up (no address is set) and given a few seconds to see one.
func detectInterface(ctx context.Context, sys System) (string, error) {
	links, err := sys.Links()
	if err != nil {
		return "", fmt.Errorf("listing network interfaces: %w", err)
	}
	name, err := chooseInterface(links)
	if err == nil {
		return name, nil
	}
	raised := false
	for _, l := range links {
		if !l.Up && l.Ether && l.Physical && !l.Wireless && !l.Loopback {
			if sys.LinkUp(ctx, l.Name) == nil {
				raised = true
			}
		}
	}
	if !raised {
		return "", err
	}
	for range 10 {
		time.Sleep(500 * time.Millisecond)
		if links, lerr := sys.Links(); lerr == nil {
			if name, cerr := chooseInterface(links); cerr == nil {
				return name, nil
			} else {
				err = cerr
			}
		}
	}
	return "", err
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

// pickAddress returns the head's address: an address the interface already
// has in subnet (someone configured it on purpose), else .1 of subnet.
func pickAddress(have []netip.Prefix, subnet netip.Prefix) (addr netip.Addr, existing bool) {
	for _, p := range have {
		if subnet.Contains(p.Addr()) && p.Addr() != subnet.Addr() {
			return p.Addr(), true
		}
	}
	return subnet.Addr().Next(), false
}

// ensureAddress brings iface up and makes sure it has an address in subnet,
// adding .1 when it has none, and returns the head's address. The address
// is left in place when the head stops: nodes with their root on NFS keep
// using it across a restart of the head daemon. A missing interface is an
// *inputerr.Error for Options.Interface.
func ensureAddress(ctx context.Context, sys System, iface string, subnet netip.Prefix, log *slog.Logger) (netip.Addr, error) {
	have, err := sys.Addrs(iface)
	if err != nil {
		return netip.Addr{}, optionError(InputInterface, fmt.Errorf("interface %s: %w", iface, err))
	}
	if err := sys.LinkUp(ctx, iface); err != nil {
		return netip.Addr{}, err
	}
	addr, existing := pickAddress(have, subnet)
	if existing {
		log.Info("using the interface's address in the cluster subnet", "iface", iface, "addr", addr, "subnet", subnet)
		return addr, nil
	}
	p := netip.PrefixFrom(addr, subnet.Bits())
	if err := sys.AddAddr(ctx, iface, p); err != nil {
		return netip.Addr{}, err
	}
	log.Info("added the head's address", "iface", iface, "addr", p, "other_addrs", have)
	return addr, nil
}
