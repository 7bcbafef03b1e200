package localnode1

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Network configuration tools localnode1 knows, in the order it looks for
// them: the one that runs owns the interfaces, and the cluster interface's
// address must be in its configuration, or it may take the address away.
const (
	NetNetworkManager = "networkmanager"
	NetNetworkd       = "networkd"
	NetIfupdown       = "ifupdown"
	// NetNone: nothing configures interfaces; the head adds the address
	// itself at every start.
	NetNone = "none"
)

// detectNetwork says which tool configures this host's network.
func (s *System) detectNetwork(ctx context.Context) string {
	switch {
	case s.unitActive(ctx, "NetworkManager.service"):
		return NetNetworkManager
	case s.unitActive(ctx, "systemd-networkd.service"):
		return NetNetworkd
	case s.exists("/etc/network/interfaces"):
		return NetIfupdown
	}
	return NetNone
}

// netConfigPath is the file that configures iface for the tool net.
func netConfigPath(network, iface string) string {
	switch network {
	case NetNetworkManager:
		return "/etc/NetworkManager/system-connections/clusterdebian-" + iface + ".nmconnection"
	case NetNetworkd:
		// 10-: networkd uses the first matching file in name order, so this
		// one wins over a catch-all DHCP file for the interface.
		return "/etc/systemd/network/10-clusterdebian-" + iface + ".network"
	case NetIfupdown:
		return "/etc/network/interfaces.d/clusterdebian-" + iface
	}
	return ""
}

// netConfig renders the configuration: a static address and nothing else:
// no gateway and no DNS, because the cluster network leads nowhere.
func netConfig(network, iface string, addr netip.Prefix) (data string, mode uint32) {
	switch network {
	case NetNetworkManager:
		// NetworkManager ignores keyfiles that others can read.
		return fmt.Sprintf(`# Written by clusterdebian localnode1: the cluster network; removed by --remove.
[connection]
id=clusterdebian-%[1]s
type=ethernet
interface-name=%[1]s
autoconnect=true

[ipv4]
method=manual
address1=%[2]s
never-default=true

[ipv6]
method=disabled
`, iface, addr), 0o600
	case NetNetworkd:
		return fmt.Sprintf(`# Written by clusterdebian localnode1: the cluster network; removed by --remove.
[Match]
Name=%s

[Link]
RequiredForOnline=no

[Network]
Address=%s
ConfigureWithoutCarrier=yes
LinkLocalAddressing=no
IPv6AcceptRA=no
`, iface, addr), 0o644
	case NetIfupdown:
		return fmt.Sprintf(`# Written by clusterdebian localnode1: the cluster network; removed by --remove.
auto %[1]s
iface %[1]s inet static
	address %[2]s
`, iface, addr), 0o644
	}
	return "", 0
}

// ifupdownSources reports whether /etc/network/interfaces reads
// interfaces.d, where localnode1's stanza goes.
func ifupdownSources(interfaces string) bool {
	re := regexp.MustCompile(`(?m)^\s*(source\s+/etc/network/interfaces\.d/\*|source-directory\s+(/etc/network/)?interfaces\.d/?)\s*$`)
	return re.MatchString(interfaces)
}

// ifupdownConfigures reports whether interfaces already has a stanza for
// iface: two configurations of one interface fight.
func ifupdownConfigures(interfaces, iface string) bool {
	re := regexp.MustCompile(`(?m)^\s*iface\s+` + regexp.QuoteMeta(iface) + `\s`)
	return re.MatchString(interfaces)
}

// netUp applies the new configuration to the interface.
func (s *System) netUp(ctx context.Context, network, iface string) error {
	switch network {
	case NetNetworkManager:
		if _, err := s.Run(ctx, "nmcli", "connection", "reload"); err != nil {
			return err
		}
		_, err := s.Run(ctx, "nmcli", "connection", "up", "clusterdebian-"+iface)
		return err
	case NetNetworkd:
		if _, err := s.Run(ctx, "networkctl", "reload"); err != nil {
			return err
		}
		_, err := s.Run(ctx, "networkctl", "reconfigure", iface)
		return err
	case NetIfupdown:
		// ifup of an interface that is already up is a no-op; down and up
		// applies a changed stanza.
		s.Run(ctx, "ifdown", "--force", iface)
		_, err := s.Run(ctx, "ifup", iface)
		return err
	}
	return nil
}

// netDown takes the configuration off the interface, before its file goes
// (ifdown and nmcli read it).
func (s *System) netDown(ctx context.Context, network, iface string) {
	switch network {
	case NetNetworkManager:
		s.Run(ctx, "nmcli", "connection", "down", "clusterdebian-"+iface)
	case NetIfupdown:
		s.Run(ctx, "ifdown", "--force", iface)
	}
}

// netReload makes the tool forget the removed file.
func (s *System) netReload(ctx context.Context, network string) {
	switch network {
	case NetNetworkManager:
		s.Run(ctx, "nmcli", "connection", "reload")
	case NetNetworkd:
		s.Run(ctx, "networkctl", "reload")
	}
}

// hasAddr reports whether addrs holds addr exactly.
func hasAddr(addrs []netip.Prefix, addr netip.Prefix) bool {
	for _, a := range addrs {
		if a == addr {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
