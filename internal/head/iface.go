package head

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// link is what the interface detection needs to know about one interface.
type link struct {
	Name     string
	Up       bool // administratively up
	Carrier  bool // a cable is plugged in and the other end is alive
	Loopback bool
	Ether    bool // ARPHRD_ETHER: ethernet, bridges, veths, wifi
	Physical bool // backed by a device (PCI, USB), not virtual
	Wireless bool
	Bridge   bool
	Slave    bool // enslaved to a bridge or bond: its master holds the address
}

// usable says why a link cannot be the cluster interface, or "" if it can.
func (l link) usable() string {
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
// its error is an *OptionError for Options.Interface.
func chooseInterface(links []link) (string, error) {
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
		return "", optionErrorf("Interface", "no connected wired network interface for the cluster network (interfaces: %s); "+
			"plug the cluster switch in, or name the interface", strings.Join(seen, ", "))
	}
	return "", optionErrorf("Interface", "several connected network interfaces: %s; the head will not guess which one is the cluster network "+
		"(it serves DHCP there): name it", strings.Join(ok, ", "))
}

// sysClassNet is where the kernel describes network interfaces.
const sysClassNet = "/sys/class/net"

// readLinks describes this machine's interfaces from net.Interfaces and sysfs.
func readLinks() ([]link, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	exists := func(name, rel string) bool {
		_, err := os.Lstat(filepath.Join(sysClassNet, name, rel))
		return err == nil
	}
	read := func(name, rel string) string {
		b, _ := os.ReadFile(filepath.Join(sysClassNet, name, rel))
		return string(bytes.TrimSpace(b))
	}
	var out []link
	for _, i := range ifs {
		out = append(out, link{
			Name:     i.Name,
			Up:       i.Flags&net.FlagUp != 0,
			Loopback: i.Flags&net.FlagLoopback != 0,
			Carrier:  read(i.Name, "carrier") == "1",
			Ether:    read(i.Name, "type") == "1",
			Physical: exists(i.Name, "device"),
			Wireless: exists(i.Name, "wireless") || exists(i.Name, "phy80211"),
			Bridge:   exists(i.Name, "bridge"),
			Slave:    exists(i.Name, "master"),
		})
	}
	return out, nil
}

// DetectInterface returns the one connected, wired interface of this machine,
// or an error that lists the candidates and says how to choose.
//
// At boot nothing has brought the wired interfaces up yet, and a link that is
// down shows no carrier; so when none is connected, the physical wired ones
// are brought up (no address is set) and given a few seconds to see one.
func DetectInterface() (string, error) {
	links, err := readLinks()
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
			if ipCmd(context.Background(), "link", "set", l.Name, "up") == nil {
				raised = true
			}
		}
	}
	if !raised {
		return "", err
	}
	for range 10 {
		time.Sleep(500 * time.Millisecond)
		if links, lerr := readLinks(); lerr == nil {
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

// EnsureAddress brings iface up and makes sure it has an address in subnet,
// adding .1 when it has none, and returns the head's address. The address
// is left in place when the head stops: nodes with their root on NFS keep
// using it across a restart of the head daemon. A missing interface is an
// *OptionError for Options.Interface.
func EnsureAddress(ctx context.Context, iface string, subnet netip.Prefix, log *slog.Logger) (netip.Addr, error) {
	have, err := InterfaceAddrs(iface)
	if err != nil {
		return netip.Addr{}, &OptionError{Field: "Interface", Err: fmt.Errorf("interface %s: %w", iface, err)}
	}
	if err := ipCmd(ctx, "link", "set", "dev", iface, "up"); err != nil {
		return netip.Addr{}, err
	}
	addr, existing := pickAddress(have, subnet)
	if existing {
		log.Info("using the interface's address in the cluster subnet", "iface", iface, "addr", addr, "subnet", subnet)
		return addr, nil
	}
	p := netip.PrefixFrom(addr, subnet.Bits())
	if err := ipCmd(ctx, "addr", "add", p.String(), "dev", iface); err != nil {
		return netip.Addr{}, err
	}
	log.Info("added the head's address", "iface", iface, "addr", p, "other_addrs", have)
	return addr, nil
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
