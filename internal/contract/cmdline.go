package contract

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ClusterDebian's kernel parameters: the head writes them into every
// node's command line (Cmdline.Format), and the node's initrd, its agent,
// `clusterdebian status` and the login banner read them back
// (ParseCmdline). The initramfs scripts read the same names in sh.
const (
	// ParamRole marks a network-booted node: clusterdebian.role=node. A
	// machine without it is the head (node1).
	ParamRole = "clusterdebian.role"
	// ParamHead is the head's address (and HTTP port when not 80):
	// clusterdebian.head=10.99.0.1 or 10.99.0.1:8080.
	ParamHead = "clusterdebian.head"
	// ParamToken is the cluster token the agent registers with.
	ParamToken = "clusterdebian.token"
	// ParamRoot is the root mode: clusterdebian.root=shared or ram.
	ParamRoot = "clusterdebian.root"
	// ParamLayers names the image layers after the base layer that
	// live-boot fetches too, comma-separated (RAM root only).
	ParamLayers = "clusterdebian.layers"
	// ParamBootIF names the network card the node booted from, as pxelinux
	// does: BOOTIF=01-52-54-00-12-34-56 (01 is the ARP hardware type of
	// Ethernet). initramfs-tools' configure_networking (the NFS root's
	// initrd) and live-boot's Device_from_bootif (the RAM root's) both turn
	// it back into a MAC and configure that card alone with ip=dhcp,
	// instead of the first card that answers DHCP.
	ParamBootIF = "BOOTIF"
)

// NFSRootOptions are the mount options of a shared-root node's root:
// NFSv3 over TCP (the initramfs mounter, klibc's nfsmount, speaks only
// v2/v3), with the timeouts of nfs(5) for TCP: 60 s before a request is
// sent again (timeo, in tenths of a second), 2 tries before "server not
// responding". nfsmount's own defaults are 0.7 s and 3, meant for UDP: a
// server busy with a room of booting machines answers later than that,
// and every node then sends its requests again, which loads it more. The
// root stays a hard mount: it waits for the server rather than fail.
const NFSRootOptions = "vers=3,tcp,timeo=600,retrans=2"

// ParamSysRq turns on every SysRq function from the kernel's first instant,
// whatever kernel.sysrq says later (Debian's default, 438, leaves out the
// task dumps t and w). Every ClusterDebian machine boots with it, node1
// (imagebuild's boot menu) and the nodes (Cmdline.Format): it is what
// makes a hung machine say what it waits for, on its serial console
// (Alt-SysRq-T, a break on the serial line, or `clusterdebian vm sysrq`).
// A kernel parameter rather than a sysctl file in the image, because the
// hangs worth asking about happen where no file can be read: in the
// initrd, or once a node's NFS root stopped answering. Anyone at the
// keyboard could power the machine off anyway.
const ParamSysRq = "sysrq_always_enabled"

// Consoles are the consoles every ClusterDebian machine writes its boot
// messages to: a serial line (VMs, server racks) and the screen. The last
// console= is the one /dev/console is, and a person at a machine looks at
// the screen.
const Consoles = "console=ttyS0,115200n8 console=tty0"

// RoleNode is ParamRole's value on nodes.
const RoleNode = "node"

// Cmdline is what the head tells a node on its kernel command line.
type Cmdline struct {
	// Node is true on a network-booted node (ParamRole=RoleNode).
	Node bool
	// Head is the head's address on the cluster network.
	Head netip.Addr
	// HTTPPort is the head's HTTP port; 0 means 80.
	HTTPPort uint16
	// Token is the cluster token.
	Token string
	// Root is the root mode.
	Root RootMode
	// Layers are the image layers above BaseLayer, in stacking order (RAM
	// root only).
	Layers []string
	// LayerSums is the SHA-256 of every image layer, base included, by
	// name (ParamLayerSums; RAM root only): node1's manifest, which the
	// initrd checks each fetched layer against.
	LayerSums map[string]string
	// Swarm has node1 redirect layer fetches to peers, and the node serve
	// its verified layers (ParamSwarm; RAM root only).
	Swarm bool
	// BootMAC is the MAC of the network card the node booted from
	// (ParamBootIF), when the head knows it: the iPXE script's URL names
	// it. Nil writes no BOOTIF.
	BootMAC net.HardwareAddr
	// Interface is node1's choice of cluster interface (ParamInterface,
	// ParseInterfaceChoice's forms), from its boot menu; nodes have none.
	Interface string
	// Extra are further kernel parameters, from cluster.toml
	// image.kernel_cmdline, appended at the end. ParseCmdline puts here
	// every parameter that Format does not write itself.
	Extra []string
}

// HTTPBase is the head's HTTP base URL: http://10.99.0.1[:port].
func (c Cmdline) HTTPBase() string {
	return "http://" + c.headParam()
}

func (c Cmdline) headParam() string {
	if c.HTTPPort != 0 && c.HTTPPort != 80 {
		return netip.AddrPortFrom(c.Head, c.HTTPPort).String()
	}
	return c.Head.String()
}

// Format returns a node's whole kernel command line.
//
// The consoles (Consoles) come first, then ParamSysRq.
//
// For the shared root, nfsroot names the export of node1's whole live root
// (with NFSRootOptions) and ip=dhcp has
// the initramfs configure the boot NIC (Debian's kernel does no IP
// autoconfiguration itself). For the RAM root, live-boot fetches the base
// layer over HTTP (fetch=), and the other layers through ParamLayers. With
// BootMAC, ParamBootIF names the card to configure, so that a node with
// several cards uses the one it booted from.
func (c Cmdline) Format() string {
	p := append(strings.Fields(Consoles), ParamSysRq)
	if c.Node {
		p = append(p, ParamRole+"="+RoleNode)
	}
	if c.Head.IsValid() {
		p = append(p, ParamHead+"="+c.headParam())
	}
	if c.Token != "" {
		p = append(p, ParamToken+"="+c.Token)
	}
	// Without a head there is nothing to fetch or mount: netip.Addr{}
	// would write "invalid IP", a space and all, into fetch= or nfsroot=.
	switch c.Root {
	case RootRAM:
		p = append(p, ParamRoot+"="+string(RootRAM), "boot=live")
		if c.Head.IsValid() {
			p = append(p, "fetch="+c.HTTPBase()+NetbootPath+BaseLayer)
		}
		p = append(p, "ip=dhcp")
		if len(c.Layers) > 0 {
			p = append(p, ParamLayers+"="+strings.Join(c.Layers, ","))
		}
		if len(c.LayerSums) > 0 {
			p = append(p, ParamLayerSums+"="+FormatLayerSums(c.LayerSums))
		}
		if c.Swarm {
			p = append(p, ParamSwarm+"=1")
		}
	default:
		p = append(p, ParamRoot+"="+string(RootShared), "root=/dev/nfs")
		if c.Head.IsValid() {
			p = append(p, "nfsroot="+c.Head.String()+":/,"+NFSRootOptions)
		}
		p = append(p, "ip=dhcp", "rw")
	}
	if bootif := FormatBootIF(c.BootMAC); bootif != "" {
		p = append(p, ParamBootIF+"="+bootif)
	}
	if c.Interface != "" {
		p = append(p, ParamInterface+"="+c.Interface)
	}
	for _, e := range c.Extra {
		if e = strings.TrimSpace(e); e != "" {
			p = append(p, e)
		}
	}
	return strings.Join(p, " ")
}

// formatted reports whether Format writes the parameter p itself (given the
// rest of the line), so that ParseCmdline does not count it as Extra.
func formatted(p string) bool {
	key, _, _ := strings.Cut(p, "=")
	switch key {
	case "console", "boot", "fetch", "nfsroot", "ip", ParamSysRq:
		return true
	case "root":
		return p == "root=/dev/nfs"
	}
	return p == "rw"
}

// FormatBootIF writes a MAC as ParamBootIF's value, 01-52-54-00-12-34-56
// (lower-case, as the initrds compare it with /sys/class/net/*/address), or
// "" when hw is not a 6-byte Ethernet address.
func FormatBootIF(hw net.HardwareAddr) string {
	mac := MACString(hw)
	if mac == "" {
		return ""
	}
	return "01-" + strings.ReplaceAll(mac, ":", "-")
}

// ParseBootIF reads ParamBootIF's value: "01-" and an Ethernet MAC with
// dashes.
func ParseBootIF(v string) (net.HardwareAddr, error) {
	mac, ok := strings.CutPrefix(v, "01-")
	if !ok {
		return nil, fmt.Errorf("%q is not 01- and an Ethernet MAC address", v)
	}
	norm, err := NormalizeMAC(mac)
	if err != nil || !strings.Contains(mac, "-") {
		return nil, fmt.Errorf("%q is not 01- and an Ethernet MAC address with dashes", v)
	}
	hw, _ := net.ParseMAC(norm)
	return hw, nil
}

// ParseCmdline reads a kernel command line (the contents of /proc/cmdline).
// Parameters that are not ClusterDebian's go to Extra, except those Format
// writes itself; a line without ParamRole is the head's. An error names the
// parameter whose value is malformed.
func ParseCmdline(line string) (Cmdline, error) {
	var c Cmdline
	for _, f := range strings.Fields(line) {
		key, val, hasVal := strings.Cut(f, "=")
		if key == ParamBootIF && hasVal {
			hw, err := ParseBootIF(val)
			if err != nil {
				return c, fmt.Errorf("%s: %w", key, err)
			}
			c.BootMAC = hw
			continue
		}
		if !strings.HasPrefix(key, "clusterdebian.") {
			if !formatted(f) {
				c.Extra = append(c.Extra, f)
			}
			continue
		}
		if !hasVal {
			return c, fmt.Errorf("kernel parameter %s has no value (%s=...)", key, key)
		}
		switch key {
		case ParamRole:
			c.Node = val == RoleNode
		case ParamHead:
			if val == "" {
				c.Head, c.HTTPPort = netip.Addr{}, 0
			} else if err := c.parseHead(val); err != nil {
				return c, fmt.Errorf("%s=%s: %w", key, val, err)
			}
		case ParamToken:
			c.Token = val
		case ParamRoot:
			r, err := ParseRootMode(val)
			if err != nil {
				return c, fmt.Errorf("%s: %w", key, err)
			}
			c.Root = r
		case ParamInterface:
			if _, err := ParseInterfaceChoice(val); err != nil {
				return c, fmt.Errorf("%s: %w", key, err)
			}
			c.Interface = val
		case ParamLayers:
			c.Layers = nil
			for _, l := range strings.Split(val, ",") {
				if !IsLayer(l) {
					return c, fmt.Errorf("%s: %q is not a layer name like 02-custom.ext4", key, l)
				}
				c.Layers = append(c.Layers, l)
			}
		case ParamLayerSums:
			sums, err := ParseLayerSums(val)
			if err != nil {
				return c, fmt.Errorf("%s: %w", key, err)
			}
			c.LayerSums = sums
		case ParamSwarm:
			c.Swarm = val == "1"
		default:
			// A newer head's parameter: keep it, so nothing is lost.
			c.Extra = append(c.Extra, f)
		}
	}
	if c.Root == "" {
		c.Root = RootShared
	}
	return c, nil
}

func (c *Cmdline) parseHead(v string) error {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		if !ap.Addr().Is4() {
			return fmt.Errorf("not an IPv4 address")
		}
		c.Head, c.HTTPPort = ap.Addr(), ap.Port()
		if c.HTTPPort == 80 {
			c.HTTPPort = 0
		}
		return nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || !a.Is4() {
		return fmt.Errorf("not an IPv4 address or address:port")
	}
	c.Head, c.HTTPPort = a, 0
	return nil
}

// CheckExtra refuses extra kernel parameters that would change the iPXE or
// GRUB script rather than the kernel's command line: line breaks start a
// new script command, "${...}" expands script settings, and "||", "&&"
// chain commands. Quotes and backslashes are refused too. ParamRole and
// the other ClusterDebian parameters, and ParamBootIF, are the head's to
// set.
func CheckExtra(extra string) error {
	for _, r := range extra {
		if r < ' ' || r == 0x7f || strings.ContainsRune("\"'`$\\;&|", r) {
			return fmt.Errorf("%q must be plain kernel parameters, without quotes, line breaks or the characters $ \\ ; & |", extra)
		}
	}
	for _, f := range strings.Fields(extra) {
		if strings.HasPrefix(f, "clusterdebian.") {
			return fmt.Errorf("%q: the clusterdebian.* parameters are set by the head", f)
		}
		if key, _, _ := strings.Cut(f, "="); key == ParamBootIF {
			return fmt.Errorf("%q: %s is set by the head, for each node its own network card", f, ParamBootIF)
		}
	}
	return nil
}

// Port returns the head's HTTP port (80 when HTTPPort is 0).
func (c Cmdline) Port() int {
	if c.HTTPPort == 0 {
		return 80
	}
	return int(c.HTTPPort)
}

// String is Format with the token hidden, for logs: the journal is
// readable by more people than the token file.
func (c Cmdline) String() string {
	if c.Token != "" {
		c.Token = "…"
	}
	return c.Format()
}
