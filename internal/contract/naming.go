package contract

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Naming names the machines of one cluster network after their addresses.
//
// The rule: node1 is the head, whatever its address. Any other machine is
// node<N>, N the host number of its address within Subnet (the address
// minus the network's): the last octet on a /24, as the original
// ClusterDebian did, and still unique on a /23, /22 or /16. Only the head
// may be called node1, so a machine whose host number is 1 (possible when
// the head is not .1, as on a LAN whose DHCP server gave node1 another
// address) takes the head's own host number instead, which no other
// machine can have. Names are therefore unique and follow from the address
// alone, on the head, in the registry, in DHCP and in the nodes' initrd.
type Naming struct {
	// Subnet is the cluster network, an IPv4 prefix of /30 or wider.
	Subnet netip.Prefix
	// Head is node1's address in Subnet.
	Head netip.Addr
}

// ErrNotNodeName is wrapped by Naming.Addr for a name that is no node's.
var ErrNotNodeName = errors.New("not a node name")

// HeadName is the head's name.
const HeadName = namePrefix + "1"

// NamePattern is an ssh_config(5) / known_hosts pattern that matches every
// node name.
const NamePattern = namePrefix + "*"

// CheckSubnet reports what is wrong with a cluster subnet: it must be an
// IPv4 prefix from /8 to /30 with no host bits set. This is the one rule
// for cluster.toml's network.subnet, the head's --subnet and a subnet the
// head learns from a LAN's DHCP server.
func CheckSubnet(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%v is not an IPv4 subnet like 10.99.0.0/24", p)
	case !p.Addr().Is4():
		return fmt.Errorf("%v is not IPv4; the cluster network is IPv4", p)
	case p.Bits() > 30:
		return fmt.Errorf("%v is too small for a cluster: use /30 or wider", p)
	case p.Bits() < 8:
		return fmt.Errorf("%v is wider than /8", p)
	case p.Masked() != p:
		return fmt.Errorf("%v has host bits set; did you mean %v?", p, p.Masked())
	}
	return nil
}

// Check reports what is wrong with the naming's subnet or head address.
func (n Naming) Check() error {
	if err := CheckSubnet(n.Subnet.Masked()); err != nil {
		return fmt.Errorf("cluster subnet: %w", err)
	}
	if _, err := n.hostNumber(n.Head); err != nil {
		return fmt.Errorf("head address: %w", err)
	}
	return nil
}

// HostNumber returns addr's host number within the subnet: 1 to
// 2^(32-bits)-2. It fails for an address outside the subnet and for the
// network and broadcast addresses.
func (n Naming) HostNumber(addr netip.Addr) (uint32, error) {
	return n.hostNumber(addr)
}

func (n Naming) hostNumber(addr netip.Addr) (uint32, error) {
	addr = addr.Unmap()
	p := n.Subnet.Masked()
	if !p.IsValid() || !addr.Is4() || !p.Contains(addr) {
		return 0, fmt.Errorf("%v is not in the cluster subnet %v", addr, p)
	}
	h := u32(addr) - u32(p.Addr())
	if h == 0 || h == hostMask(p) {
		return 0, fmt.Errorf("%v is the network or broadcast address of %v", addr, p)
	}
	return h, nil
}

// Name returns the name of the machine at addr (see Naming for the rule).
// It fails for an address that no machine of the subnet can have.
func (n Naming) Name(addr netip.Addr) (string, error) {
	addr = addr.Unmap()
	if addr == n.Head.Unmap() {
		return HeadName, nil
	}
	h, err := n.hostNumber(addr)
	if err != nil {
		return "", err
	}
	if h == 1 {
		if h, err = n.hostNumber(n.Head); err != nil {
			return "", fmt.Errorf("head address: %w", err)
		}
	}
	return namePrefix + strconv.FormatUint(uint64(h), 10), nil
}

// MustName is Name for addresses known to be in the subnet; it returns ""
// for one that is not.
func (n Naming) MustName(addr netip.Addr) string {
	s, _ := n.Name(addr)
	return s
}

// Addr returns the address of the machine called name: the reverse of
// Name. The error wraps ErrNotNodeName when name is not of the form
// node<N> with N a host number of the subnet.
func (n Naming) Addr(name string) (netip.Addr, error) {
	num, ok := NodeNumber(name)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: %q", ErrNotNodeName, name)
	}
	if num == 1 {
		if !n.Head.Unmap().Is4() {
			return netip.Addr{}, errors.New("head address unknown")
		}
		return n.Head.Unmap(), nil
	}
	p := n.Subnet.Masked()
	if !p.IsValid() || !p.Addr().Is4() || num > uint64(hostMask(p)) {
		return netip.Addr{}, fmt.Errorf("%w in %v: %q", ErrNotNodeName, p, name)
	}
	head, err := n.hostNumber(n.Head)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("head address: %w", err)
	}
	h := uint32(num)
	if h == head {
		h = 1 // the machine at host number 1 carries the head's number
	}
	if h == hostMask(p) {
		return netip.Addr{}, fmt.Errorf("%w in %v: %q is the broadcast address", ErrNotNodeName, p, name)
	}
	return from32(u32(p.Addr()) + h), nil
}

// NodeNumber parses a node name: node<N> with N a decimal number without
// leading zeros (names are never zero-padded). ok is false for anything
// else.
func NodeNumber(name string) (n uint64, ok bool) {
	s, found := strings.CutPrefix(name, namePrefix)
	if !found || s == "" || (s[0] == '0') || len(s) > 10 {
		return 0, false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n > 0
}

// IsNodeName reports whether name has the form of a node name.
func IsNodeName(name string) bool {
	_, ok := NodeNumber(name)
	return ok
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func from32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func hostMask(p netip.Prefix) uint32 {
	return uint32(1)<<(32-p.Bits()) - 1
}

// Broadcast returns the broadcast address of an IPv4 prefix.
func Broadcast(p netip.Prefix) netip.Addr {
	p = p.Masked()
	return from32(u32(p.Addr()) | hostMask(p))
}
