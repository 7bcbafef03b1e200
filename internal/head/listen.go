package head

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

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

// Listening lists the listening TCP and bound UDP sockets (IPv4 and IPv6)
// of the calling thread's network namespace, from /proc/self/net. What
// Listeners names is compared against it (doctor, TestHeadAccessAudit).
func Listening() ([]Listener, error) {
	var out []Listener
	for _, f := range []string{"tcp", "tcp6", "udp", "udp6"} {
		data, err := os.ReadFile("/proc/self/net/" + f)
		if os.IsNotExist(err) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		ls, err := ParseProcNet(strings.TrimSuffix(f, "6"), data)
		if err != nil {
			return nil, fmt.Errorf("/proc/self/net/%s: %w", f, err)
		}
		out = append(out, ls...)
	}
	return out, nil
}

// ParseProcNet parses a /proc/net/{tcp,udp}[6] table: the TCP sockets that
// listen and every UDP socket, as Listeners of proto ("tcp" or "udp"),
// IPv4-mapped addresses unmapped.
func ParseProcNet(proto string, data []byte) ([]Listener, error) {
	var out []Listener
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || (proto == "tcp" && fields[3] != "0A") {
			continue // TCP: listeners only
		}
		hexAddr, hexPort, _ := strings.Cut(fields[1], ":")
		raw, err := hex.DecodeString(hexAddr)
		if err != nil || (len(raw) != 4 && len(raw) != 16) {
			return nil, fmt.Errorf("bad local address %q", fields[1])
		}
		// /proc/net prints each 32-bit word in host (little-endian) order.
		for i := 0; i+4 <= len(raw); i += 4 {
			binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
		}
		addr, _ := netip.AddrFromSlice(raw)
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("bad local port %q", fields[1])
		}
		out = append(out, Listener{Proto: proto, Addr: netip.AddrPortFrom(addr.Unmap(), uint16(port))})
	}
	return out, sc.Err()
}
