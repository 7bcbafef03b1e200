package head

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
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
	Addrs(iface string) ([]netip.Prefix, error)
	// AddAddr adds addr (address and prefix length) to iface.
	AddAddr(ctx context.Context, iface string, addr netip.Prefix) error
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
	// FileSystemID identifies the file system that path is on (stat's
	// st_dev): two paths with the same ID are on one file system, which one
	// NFS export reaches all of.
	FileSystemID(path string) (uint64, error)
	// ReloadSSH has sshd read its host keys and certificates again.
	ReloadSSH(ctx context.Context) error
}

// Link is what choosing the cluster interface needs to know about one
// network interface.
type Link struct {
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

// HostSystem returns the machine this process runs on: ip(8) for
// addresses, sysfs for interfaces and overlayfs, exportfs(8) and
// systemctl(1) for the NFS server and sshd.
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

func (hostSystem) Addrs(iface string) ([]netip.Prefix, error) { return InterfaceAddrs(iface) }

func (hostSystem) AddAddr(ctx context.Context, iface string, addr netip.Prefix) error {
	return ipCmd(ctx, "addr", "add", addr.String(), "dev", iface)
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
