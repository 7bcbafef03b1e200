package head

import (
	"net/netip"

	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
)

// Listener is one socket the head opens: Proto is "tcp" or "udp", Addr the
// local address and port as /proc/net shows it (DHCP binds the wildcard
// address on the cluster interface, so it shows as 0.0.0.0).
type Listener struct {
	Proto string
	Addr  netip.AddrPort
	// What the socket serves: "DHCP", "TFTP", "HTTP", ...
	What string
	// Optional sockets may be missing without harm (HTTP on loopback, which
	// something else may hold).
	Optional bool
}

func (l Listener) String() string { return l.Proto + " " + l.Addr.String() }

// Listeners returns the sockets a head serving in DHCP mode (what it does
// now: dhcp.ModeServer, ModeProxy or ModeOff, as registry.Network.Mode
// says) at address addr with its HTTP server on httpPort opens. It is the
// head's port table: TestHeadAccessAudit checks it against the sockets a
// real head opens, and `clusterdebian doctor` against node1's.
func Listeners(mode dhcp.Mode, addr netip.Addr, httpPort int) []Listener {
	any4 := netip.IPv4Unspecified()
	var ls []Listener
	switch mode {
	case dhcp.ModeServer:
		ls = append(ls, Listener{Proto: "udp", Addr: netip.AddrPortFrom(any4, 67), What: "DHCP"})
	case dhcp.ModeProxy:
		ls = append(ls,
			Listener{Proto: "udp", Addr: netip.AddrPortFrom(any4, 67), What: "proxyDHCP"},
			Listener{Proto: "udp", Addr: netip.AddrPortFrom(any4, 4011), What: "PXE boot server"})
	}
	if httpPort == 0 {
		httpPort = 80
	}
	return append(ls,
		Listener{Proto: "udp", Addr: netip.AddrPortFrom(addr, 69), What: "TFTP"},
		Listener{Proto: "tcp", Addr: netip.AddrPortFrom(addr, uint16(httpPort)), What: "HTTP"},
		Listener{Proto: "tcp", Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(httpPort)),
			What: "HTTP on loopback (status page on node1)", Optional: true})
}
