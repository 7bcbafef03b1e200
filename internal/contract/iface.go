package contract

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// ParamInterface chooses node1's cluster interface at boot:
// clusterdebian.interface=<name|MAC|N>. node1's boot menu writes it (a
// submenu offers the first, second and third wired network card), the head
// reads it from node1's own command line (ParseCmdline, Cmdline.Interface),
// and it wins over cluster.toml's network.interface, which takes the same
// forms (ParseInterfaceChoice). Nodes never get it.
const ParamInterface = "clusterdebian.interface"

// InterfaceChoice is a way to name one network interface: by its name
// ("enp3s0"), by its MAC ("52:54:00:12:34:56"), or by its place N (1, 2,
// 3, ...) among the machine's wired network cards in the kernel's order
// (their interface index, the order `ip link` lists them in). The zero
// value chooses nothing.
type InterfaceChoice struct {
	Name  string
	MAC   net.HardwareAddr
	Index int // 1 is the first wired card
}

// IsZero reports whether c chooses nothing.
func (c InterfaceChoice) IsZero() bool { return c.Name == "" && c.MAC == nil && c.Index == 0 }

// String writes c the way ParseInterfaceChoice reads it.
func (c InterfaceChoice) String() string {
	switch {
	case c.Name != "":
		return c.Name
	case c.MAC != nil:
		return MACString(c.MAC)
	case c.Index > 0:
		return strconv.Itoa(c.Index)
	}
	return ""
}

// Describe says in words what c chooses: `"enp3s0"`, "the card with MAC
// 52:54:...", "the 2nd wired card".
func (c InterfaceChoice) Describe() string {
	switch {
	case c.Name != "":
		return fmt.Sprintf("%q", c.Name)
	case c.MAC != nil:
		return "the card with MAC " + MACString(c.MAC)
	case c.Index > 0:
		return "the " + ordinal(c.Index) + " wired card"
	}
	return "no card"
}

func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return strconv.Itoa(n) + suffix
}

// ifaceName is what the kernel accepts as a network interface name
// (dev_valid_name): at most 15 bytes, no '/', ':' or white space, not "."
// or "..".
var ifaceName = regexp.MustCompile(`^[^/:\s]{1,15}$`)

// MaxInterfaceIndex bounds the place a choice may name: no machine has more
// wired cards, and a larger number is a typo.
const MaxInterfaceIndex = 64

// ParseInterfaceChoice reads an interface choice: a number from 1 to
// MaxInterfaceIndex is a place among the wired cards, an Ethernet MAC a
// card's address, anything else that the kernel accepts as an interface
// name a name. "" is the zero choice. This is the one rule for
// ParamInterface and cluster.toml's network.interface.
func ParseInterfaceChoice(s string) (InterfaceChoice, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return InterfaceChoice{}, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > MaxInterfaceIndex {
			return InterfaceChoice{}, fmt.Errorf("%q: a card's place among the wired cards is 1 to %d", s, MaxInterfaceIndex)
		}
		return InterfaceChoice{Index: n}, nil
	}
	// Names cannot hold a colon; a name with five dashes may still be one.
	if mac, err := NormalizeMAC(s); err == nil {
		hw, _ := net.ParseMAC(mac)
		return InterfaceChoice{MAC: hw}, nil
	} else if strings.Count(s, ":") == 5 {
		return InterfaceChoice{}, err
	}
	if !ifaceName.MatchString(s) || s == "." || s == ".." {
		return InterfaceChoice{}, fmt.Errorf("%q is not a network interface name (like \"enp3s0\"), a MAC address or a card's place (1, 2, ...)", s)
	}
	return InterfaceChoice{Name: s}, nil
}
