package head

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcpclient"
	"github.com/clusterdebian/clusterdebian/internal/uplink"
)

// System is the machine the head runs on: its network interfaces, its NFS
// server, its sshd, its kernel settings. Every effect the head has on the
// machine outside its state folder and Options.ClusterRoot goes through it,
// so that a test can run a whole head in-process with a fake
// (Options.System) and touch nothing of the machine it runs on.
// HostSystem is the real one.
type System interface {
	// Root is the machine's root folder: "/" on a real machine. The head
	// exports Options.ClusterRoot over NFS, and has sshd pick up node1's
	// host certificate, only when ClusterRoot is this folder: the nodes
	// mount <head>:/ (contract.Cmdline), and sshd reads the machine's /etc.
	Root() string
	// Links describes the network interfaces, for choosing the cluster
	// interface.
	Links() ([]Link, error)
	// LinkUp brings an interface up, without giving it an address.
	LinkUp(ctx context.Context, iface string) error
	// Addrs returns the IPv4 addresses (with prefix length) on iface, or an
	// error when there is no such interface.
	Addrs(iface string) ([]IfAddr, error)
	// AddAddr adds addr (address and prefix length) to iface, for good.
	AddAddr(ctx context.Context, iface string, addr netip.Prefix) error
	// SetLeaseAddr puts addr on iface for lifetime (a DHCP lease's time
	// left), or refreshes its lifetime: the kernel removes it when the
	// lifetime runs out, as a lease's address must go. dhcpclient.Infinite
	// keeps it for good.
	SetLeaseAddr(ctx context.Context, iface string, addr netip.Prefix, lifetime time.Duration) error
	// DelAddr takes addr off iface.
	DelAddr(ctx context.Context, iface string, addr netip.Prefix) error
	// DefaultRoutes returns the machine's IPv4 default routes.
	DefaultRoutes() ([]uplink.Route, error)
	// AddDefaultRoute adds a default route via router on iface.
	AddDefaultRoute(ctx context.Context, iface string, router netip.Addr) error
	// ProbeDHCP asks, from iface's own MAC, whether another DHCP server
	// hands out addresses on iface's network (dhcp.Probe), and returns
	// the first that offered one.
	ProbeDHCP(ctx context.Context, iface string) (server netip.Addr, found bool, err error)
	// ReleaseInterface stops the machine's own DHCP client on iface, if
	// one runs there (ifupdown's, started for every wired card by the
	// live system's /etc/network/interfaces), so that the head's is the
	// only one; it reports whether there was one. Interfaces configured
	// otherwise are left alone.
	ReleaseInterface(ctx context.Context, iface string) (bool, error)
	// DHCPClient opens a DHCP client on iface that asks from iface's own
	// MAC under the name hostname.
	DHCPClient(iface, hostname string) (dhcpclient.Exchanger, error)
	// Resolvers returns the machine's upstream DNS servers
	// (uplink.Resolvers of its resolv.conf).
	Resolvers() ([]netip.Addr, error)
	// SetResolvers makes servers and domain the machine's DNS settings
	// (resolv.conf), unless another program manages them (resolv.conf is
	// a link); comment says where they come from.
	SetResolvers(ctx context.Context, servers []netip.Addr, domain, comment string) error
	// ApplyNAT loads an nft(8) script (uplink.Ruleset) as one transaction,
	// and, with forward, turns on the kernel's IPv4 forwarding.
	ApplyNAT(ctx context.Context, ruleset string, forward bool) error
	// RefreshBanner has the login banner rendered again (it reads
	// contract.NetworkFile) and shown at the next prompt.
	RefreshBanner(ctx context.Context) error
	// HardwareAddr returns iface's MAC address.
	HardwareAddr(iface string) (net.HardwareAddr, error)
	// Hostname returns the machine's host name.
	Hostname() (string, error)
	// OverlayNFSExport reports whether overlayfs may be exported over NFS
	// (the kernel was booted with overlay.nfs_export=Y); an error when the
	// machine cannot tell (no overlay module).
	OverlayNFSExport() (bool, error)
	// Export makes exports (exports(5) lines) the NFS server's entry for
	// the cluster, in ExportsFile, and has the server read it again.
	Export(ctx context.Context, exports string) error
	// SetNFSDThreads sets the kernel NFS server's thread count to n when
	// the server runs, and returns the count it had; an error when it
	// does not run or the count cannot be set.
	SetNFSDThreads(ctx context.Context, n int) (was int, err error)
	// FileSystemID identifies the file system that path is on (stat's
	// st_dev): two paths with the same ID are on one file system, which one
	// NFS export reaches all of.
	FileSystemID(path string) (uint64, error)
	// ReloadSSH has sshd read its host keys and certificates again.
	ReloadSSH(ctx context.Context) error
}

// IfAddr is one IPv4 address of an interface.
type IfAddr struct {
	netip.Prefix
	// Dynamic is set for an address with a lifetime: a DHCP client's
	// lease. An address without one was put there for good, by hand or by
	// the system's network configuration (or by the head, which says so in
	// contract.NetworkFile).
	Dynamic bool
}

// Link is what choosing the cluster interface needs to know about one
// network interface.
type Link struct {
	Name     string
	Index    int // the kernel's interface index: the order of `ip link`
	MAC      net.HardwareAddr
	Up       bool // administratively up
	Carrier  bool // a cable is plugged in and the other end is alive
	Loopback bool
	Ether    bool // ARPHRD_ETHER: ethernet, bridges, veths, wifi
	Physical bool // backed by a device (PCI, USB), not virtual
	Wireless bool
	Bridge   bool
	Slave    bool // enslaved to a bridge or bond: its master holds the address
}

// HostSystem returns the machine this process runs on: ip(8) for
// addresses and routes, sysfs for interfaces and overlayfs, exportfs(8)
// and systemctl(1) for the NFS server and sshd, nft(8) for NAT, raw
// sockets for DHCP, ifupdown for the system's own DHCP client.
func HostSystem() System { return hostSystem{} }

type hostSystem struct{}

// sysClassNet is where the kernel describes network interfaces.
const sysClassNet = "/sys/class/net"

// overlayNFSExport is overlayfs's nfs_export parameter.
const overlayNFSExport = "/sys/module/overlay/parameters/nfs_export"

func (hostSystem) Root() string { return "/" }

// Links describes this machine's interfaces from net.Interfaces and sysfs.
func (hostSystem) Links() ([]Link, error) {
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
	var out []Link
	for _, i := range ifs {
		out = append(out, Link{
			Name:     i.Name,
			Index:    i.Index,
			MAC:      i.HardwareAddr,
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

func (hostSystem) LinkUp(ctx context.Context, iface string) error {
	return ipCmd(ctx, "link", "set", "dev", iface, "up")
}

// Addrs asks ip(8), which tells dynamic addresses from permanent ones.
func (hostSystem) Addrs(iface string) ([]IfAddr, error) {
	out, err := exec.Command("ip", "-j", "-4", "addr", "show", "dev", iface).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("ip addr show dev %s: %s", iface, bytes.TrimSpace(ee.Stderr))
		}
		return nil, err
	}
	return parseIPAddrJSON(out)
}

// parseIPAddrJSON reads `ip -j -4 addr show`'s IPv4 addresses.
func parseIPAddrJSON(data []byte) ([]IfAddr, error) {
	var links []struct {
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Dynamic   bool   `json:"dynamic"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(data, &links); err != nil {
		return nil, fmt.Errorf("ip -j addr: %w", err)
	}
	var out []IfAddr
	for _, l := range links {
		for _, a := range l.AddrInfo {
			ip, err := netip.ParseAddr(a.Local)
			if a.Family != "inet" || err != nil || !ip.Is4() {
				continue
			}
			out = append(out, IfAddr{Prefix: netip.PrefixFrom(ip, a.PrefixLen), Dynamic: a.Dynamic})
		}
	}
	return out, nil
}

func (hostSystem) AddAddr(ctx context.Context, iface string, addr netip.Prefix) error {
	return ipCmd(ctx, "addr", "add", addr.String(), "dev", iface)
}

func (hostSystem) SetLeaseAddr(ctx context.Context, iface string, addr netip.Prefix, lifetime time.Duration) error {
	lft := "forever"
	if lifetime != dhcpclient.Infinite {
		lft = strconv.Itoa(max(int(lifetime/time.Second), 1))
	}
	return ipCmd(ctx, "addr", "replace", addr.String(), "dev", iface, "valid_lft", lft, "preferred_lft", lft)
}

func (hostSystem) DelAddr(ctx context.Context, iface string, addr netip.Prefix) error {
	return ipCmd(ctx, "addr", "del", addr.String(), "dev", iface)
}

func (hostSystem) DefaultRoutes() ([]uplink.Route, error) {
	data, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return nil, err
	}
	return parseProcRoute(data), nil
}

// parseProcRoute reads the default routes of /proc/net/route (destination
// and mask 0; the gateway in the kernel's byte order, little-endian on
// every machine the image runs on).
func parseProcRoute(data []byte) []uplink.Route {
	var out []uplink.Route
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, _ := strconv.ParseUint(f[3], 16, 16)
		if flags&0x1 == 0 { // RTF_UP
			continue
		}
		r := uplink.Route{Interface: f[0]}
		if gw, err := strconv.ParseUint(f[2], 16, 32); err == nil && gw != 0 {
			r.Gateway = netip.AddrFrom4([4]byte{byte(gw), byte(gw >> 8), byte(gw >> 16), byte(gw >> 24)})
		}
		r.Metric, _ = strconv.Atoi(f[6])
		out = append(out, r)
	}
	return out
}

func (hostSystem) AddDefaultRoute(ctx context.Context, iface string, router netip.Addr) error {
	return ipCmd(ctx, "route", "add", "default", "via", router.String(), "dev", iface)
}

func (hostSystem) ProbeDHCP(ctx context.Context, iface string) (netip.Addr, bool, error) {
	found, server, err := dhcp.Probe(ctx, iface, dhcp.DefaultProbeTimeout)
	return server, found, err
}

// ReleaseInterface stops ifupdown's DHCP client on iface: the live system
// has live-boot write "iface <card> inet dhcp" for every wired card, and
// udev starts ifup@<card>.service for each at boot, which runs dhcpcd (or
// dhclient on bookworm) before the head starts (ifup@ comes before
// network.target, the head after it). Stopping that unit runs ifdown,
// which releases the lease and takes the address away. A card that
// ifupdown configures with an address of its own (a static stanza, which
// ifquery shows with its "address:") is left alone.
func (hostSystem) ReleaseInterface(ctx context.Context, iface string) (bool, error) {
	if _, err := exec.LookPath("ifquery"); err != nil {
		return false, nil
	}
	if exec.CommandContext(ctx, "ifquery", "--state", iface).Run() != nil {
		return false, nil // ifupdown did not bring it up
	}
	if out, err := exec.CommandContext(ctx, "ifquery", iface).Output(); err != nil || strings.Contains(string(out), "address:") {
		return false, nil
	}
	unit := "ifup@" + iface + ".service"
	if exec.CommandContext(ctx, "systemctl", "is-active", "--quiet", unit).Run() == nil {
		return true, run(ctx, "systemctl", "stop", unit)
	}
	return true, run(ctx, "ifdown", "--force", iface)
}

func (hostSystem) DHCPClient(iface, hostname string) (dhcpclient.Exchanger, error) {
	return dhcpclient.Open(iface, hostname)
}

// The machine's resolver files: its own, and systemd-resolved's list of
// upstream servers when resolv.conf points at resolved's stub.
const (
	resolvConf      = "etc/resolv.conf"
	resolvedServers = "run/systemd/resolve/resolv.conf"
)

func (hostSystem) Resolvers() ([]netip.Addr, error) { return resolversIn("/") }

// resolversIn reads the upstream resolvers of the machine whose root is
// root.
func resolversIn(root string) ([]netip.Addr, error) {
	conf, err := os.ReadFile(filepath.Join(root, resolvConf))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	resolved, err := os.ReadFile(filepath.Join(root, resolvedServers))
	if err != nil {
		resolved = nil
	}
	return uplink.Resolvers(conf, resolved), nil
}

func (hostSystem) SetResolvers(_ context.Context, servers []netip.Addr, domain, comment string) error {
	return writeResolvers("/", servers, domain, comment)
}

// writeResolvers writes root's resolv.conf, unless it is a link (systemd-
// resolved, resolvconf: another program owns it).
func writeResolvers(root string, servers []netip.Addr, domain, comment string) error {
	path := filepath.Join(root, resolvConf)
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a plain file (another program manages it); left alone", path)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", comment)
	if domain != "" {
		fmt.Fprintf(&b, "search %s\n", domain)
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return atomicfile.Write(path, []byte(b.String()), 0o644)
}

// ipForward is the kernel's IPv4 forwarding switch (per network namespace).
const ipForward = "/proc/sys/net/ipv4/ip_forward"

func (hostSystem) ApplyNAT(ctx context.Context, ruleset string, forward bool) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f: %v: %s", err, bytes.TrimSpace(out))
	}
	if forward {
		return os.WriteFile(ipForward, []byte("1\n"), 0o644)
	}
	return nil
}

// RefreshBanner renders the banner again (clusterdebian-issue.service, a
// oneshot that stays active) and has the gettys show it (agetty --reload).
func (hostSystem) RefreshBanner(ctx context.Context) error {
	if err := run(ctx, "systemctl", "try-restart", "clusterdebian-issue.service"); err != nil {
		return err
	}
	if _, err := exec.LookPath("agetty"); err == nil {
		return run(ctx, "agetty", "--reload")
	}
	return nil
}

func (hostSystem) HardwareAddr(iface string) (net.HardwareAddr, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	return ifi.HardwareAddr, nil
}

func (hostSystem) Hostname() (string, error) { return os.Hostname() }

func (hostSystem) OverlayNFSExport() (bool, error) {
	v, err := os.ReadFile(overlayNFSExport)
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(v)) == "Y", nil
}

func (hostSystem) Export(ctx context.Context, exports string) error {
	if err := os.MkdirAll(filepath.Dir(ExportsFile), 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(ExportsFile, []byte(exports), 0o644); err != nil {
		return err
	}
	return run(ctx, "exportfs", "-ra")
}

func (hostSystem) FileSystemID(path string) (uint64, error) { return statDev(path) }

// statDev returns the device of the file system path is on.
func statDev(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Dev, nil
}

func (hostSystem) ReloadSSH(ctx context.Context) error {
	return run(ctx, "systemctl", "try-reload-or-restart", "ssh.service")
}

func ipCmd(ctx context.Context, args ...string) error { return run(ctx, "ip", args...) }

// run runs a command; its error carries the command's output, since these
// tools say what went wrong only there.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
