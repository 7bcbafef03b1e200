package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/hosttools"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/tether"
)

// Rooms: by default a virtual cluster sits on a private switch where node1
// is alone. A room puts it where real clusters often are, for trying the
// head's answers to them (UpOptions.LAN, UpOptions.Uplink):
//
//   - a LAN: the cluster's bridge is a lab's or office's LAN, with its own
//     router, DHCP server (dnsmasq; short leases, so that node1 renews its
//     own within minutes) and DNS server, on a subnet that is not the head's
//     default;
//   - an uplink: node1 gets a second NIC, on a network with its own router,
//     DHCP and DNS server, the way out of the cluster; the nodes reach it
//     only through node1.
//
// Each room is a network namespace of its own, "cdvm-<name>.lan" or
// "cdvm-<name>.uplink" ('.' never occurs in a cluster name, so no
// cluster's namespace can be another's room), joined by a veth to a bridge
// in the cluster's namespace. Its one address is the router's, the DHCP
// server's and the DNS server's, as on a small office router. Behind it is
// "the outside": OutsideAddr, a web server (busybox httpd) whose
// WhoamiPath answers with the address a request came from, and OutsideName,
// a name its DNS server resolves to it and nothing else.
//
//	cdvm-<name>         br0 ─ tap1 (node1), tap2, ...      brup ─ tapup (node1's second NIC)
//	                     └─ vlan                              └─ vup
//	cdvm-<name>.lan      lan0 192.168.50.1/23              cdvm-<name>.uplink  up0 172.30.0.1/24
//	                     lo 198.51.100.80 (the outside)                        lo 198.51.100.80

// Rooms' defaults and fixed addresses.
const (
	// DefaultLAN is the subnet of UpOptions.LAN that `vm up --lan` takes:
	// wider than a /24, and not the head's default network.
	DefaultLAN = "192.168.50.0/23"
	// LANLease is the LAN's lease time: dnsmasq's shortest, so that node1
	// renews its own lease about every minute.
	LANLease = 2 * time.Minute
	// UplinkSubnet is the network of node1's second NIC (UpOptions.Uplink).
	UplinkSubnet = "172.30.0.0/24"
	// UplinkLease is the uplink's lease time.
	UplinkLease = time.Hour
	// OutsideAddr is the outside's web server, beyond each room's router;
	// from TEST-NET-2 (RFC 5737), which no real network uses.
	OutsideAddr = "198.51.100.80"
	// OutsideName is the name the rooms' DNS servers give OutsideAddr
	// (every name under outside.test resolves to it).
	OutsideName = "www.outside.test"
	// WhoamiPath on the outside's web server answers "you are <address>"
	// with the address the request came from (after any NAT).
	WhoamiPath = "/cgi-bin/whoami"
)

// Kinds of rooms.
const (
	RoomLAN    = "lan"
	RoomUplink = "uplink"
)

// Files in a room's folder (RoomState.Dir).
const (
	RoomDHCPLog = "dnsmasq.log"    // dnsmasq's log: every DHCP exchange and DNS query
	RoomLeases  = "dnsmasq.leases" // dnsmasq's lease file
	RoomHTTPLog = "httpd.log"      // the web server's log, a line per request
)

// UplinkBridge and UplinkTap are the uplink's bridge in the cluster's
// namespace and node1's second NIC's tap on it.
const (
	UplinkBridge = "brup"
	UplinkTap    = "tapup"
)

// uplinkNIC is the last byte of the MAC of node1's second NIC: above every
// VM index (MaxNodes).
const uplinkNIC = 0xfe

// RoomState is a room of a cluster, as its state file records it.
type RoomState struct {
	Kind   string `json:"kind"`   // RoomLAN or RoomUplink
	NetNS  string `json:"netns"`  // the room's namespace
	Iface  string `json:"iface"`  // its interface there (lan0, up0)
	Port   string `json:"port"`   // the veth's other end, a port of Bridge in the cluster's namespace
	Bridge string `json:"bridge"` // br0 (the LAN is the cluster's network) or UplinkBridge
	Subnet string `json:"subnet"`
	// Router is the room's address: its router, DHCP and DNS server.
	Router string        `json:"router"`
	Lease  time.Duration `json:"lease"`
	Dir    string        `json:"dir"`  // logs, leases, the web server's files
	PIDs   []int         `json:"pids"` // dnsmasq's and the web server's
}

// Describe says in one line what the room is, for `vm up`'s progress.
func (r *RoomState) Describe() string {
	what := "LAN " + r.Subnet + " (the cluster's network)"
	if r.Kind == RoomUplink {
		what = "uplink " + r.Subnet + " on node1's second NIC"
	}
	return fmt.Sprintf("%s: router, DHCP and DNS server %s (dnsmasq, leases of %s), namespace %s; beyond it %s (%s) serves HTTP",
		what, r.Router, r.Lease, r.NetNS, OutsideName, OutsideAddr)
}

// RoomLease is one lease of a room's DHCP server.
type RoomLease struct {
	MAC      string
	IP       netip.Addr
	Hostname string // "" when the client gave none
	Expires  time.Time
}

// Leases reads the room's DHCP leases (dnsmasq's lease file: expiry, MAC,
// address, host name, client id per line).
func (r *RoomState) Leases() ([]RoomLease, error) {
	f, err := os.Open(filepath.Join(r.Dir, RoomLeases))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []RoomLease
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue
		}
		exp, err1 := strconv.ParseInt(fs[0], 10, 64)
		ip, err2 := netip.ParseAddr(fs[2])
		mac, err3 := contract.NormalizeMAC(fs[1])
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("%s: cannot read %q", f.Name(), sc.Text())
		}
		l := RoomLease{MAC: mac, IP: ip, Expires: time.Unix(exp, 0)}
		if fs[3] != "*" {
			l.Hostname = fs[3]
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// roomNetNS is the namespace of the room kind of the cluster name.
func roomNetNS(name, kind string) string { return NetNSPrefix + name + "." + kind }

// checkLAN checks UpOptions.LAN: an IPv4 subnet from /8 to /24 (its DHCP
// range is .100 to 55 below the broadcast address), apart from the outside.
func checkLAN(lan string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(lan)
	if err != nil {
		return p, fmt.Errorf("not a subnet like %s", DefaultLAN)
	}
	if err := contract.CheckSubnet(p); err != nil {
		return p, err
	}
	if p.Bits() > 24 {
		return p, fmt.Errorf("give a /24 or wider, as a lab's or office's LAN is")
	}
	if p.Contains(netip.MustParseAddr(OutsideAddr)) {
		return p, fmt.Errorf("it holds the outside's address %s", OutsideAddr)
	}
	return p, nil
}

// newRoom describes a room of kind on subnet for the cluster name in dir:
// the router is the subnet's first address, the DHCP range its .100 to 55
// below its broadcast address.
func newRoom(name, dir, kind string, subnet netip.Prefix) *RoomState {
	r := &RoomState{Kind: kind, NetNS: roomNetNS(name, kind), Subnet: subnet.String(),
		Router: subnet.Addr().Next().String(), Dir: filepath.Join(dir, kind)}
	switch kind {
	case RoomLAN:
		r.Iface, r.Port, r.Bridge, r.Lease = "lan0", roomPort(kind), Bridge, LANLease
	default:
		r.Iface, r.Port, r.Bridge, r.Lease = "up0", roomPort(kind), UplinkBridge, UplinkLease
	}
	return r
}

// roomPort is the name of the room's veth end in the cluster's namespace,
// on the room's bridge: Down finds it by this name when the state is lost.
func roomPort(kind string) string {
	if kind == RoomLAN {
		return "vlan"
	}
	return "vup"
}

// dhcpRange is the room's dnsmasq range: first, last, mask.
func (r *RoomState) dhcpRange() (first, last, mask netip.Addr) {
	p := netip.MustParsePrefix(r.Subnet)
	base := p.Addr().As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	hostBits := 32 - p.Bits()
	bcast := n | (1<<hostBits - 1)
	m := ^uint32(1<<hostBits - 1)
	addr := func(v uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return addr(n + 100), addr(bcast - 55), addr(m)
}

// roomTools are the host tools a room runs.
func roomTools() []hosttools.Tool {
	var ts []hosttools.Tool
	for _, t := range hosttools.Tools {
		if t.Name == "dnsmasq" || t.Name == "busybox" {
			ts = append(ts, t)
		}
	}
	return ts
}

// whoami is the outside's CGI script: the address a request came from,
// without the IPv6 mapping busybox httpd gives IPv4 peers.
const whoami = `#!/bin/sh
a=${REMOTE_ADDR#\[}
a=${a%\]}
a=${a#::ffff:}
printf 'Content-Type: text/plain\r\n\r\nyou are %s\n' "$a"
`

// createRoom makes the room's namespace, its veth to the cluster's bridge,
// its addresses and the web server's files. The cluster's namespace and
// the bridge exist.
func (c *Cluster) createRoom(ctx context.Context, r *RoomState) error {
	if err := os.MkdirAll(filepath.Join(r.Dir, "www", "cgi-bin"), 0o755); err != nil {
		return err
	}
	index := fmt.Sprintf("ClusterDebian virtual cluster %s: the outside, beyond the %s's router %s\n", c.Name, r.Kind, r.Router)
	if err := os.WriteFile(filepath.Join(r.Dir, "www", "index.html"), []byte(index), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "www", "cgi-bin", "whoami"), []byte(whoami), 0o755); err != nil {
		return err
	}
	ns, err := netns.New(ctx, r.NetNS)
	if err != nil {
		return err
	}
	cluster := &netns.NS{Name: c.NetNS}
	if err := netns.AddVeth(ctx, cluster, r.Port, ns, r.Iface); err != nil {
		return err
	}
	if err := cluster.SetMaster(ctx, r.Port, r.Bridge); err != nil {
		return err
	}
	p := netip.MustParsePrefix(r.Subnet)
	if err := ns.AddAddr(ctx, r.Iface, netip.PrefixFrom(netip.MustParseAddr(r.Router), p.Bits())); err != nil {
		return err
	}
	// The outside is a local address of the router's: packets for it
	// arrive on the room's interface and are answered from there.
	return ns.AddAddr(ctx, "lo", netip.MustParsePrefix(OutsideAddr+"/32"))
}

// startRoom starts the room's dnsmasq and web server, records their pids
// and waits until both listen.
func (c *Cluster) startRoom(ctx context.Context, r *RoomState) error {
	first, last, mask := r.dhcpRange()
	dnsmasq := []string{"dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--log-facility=-",
		"--interface=" + r.Iface, "--bind-interfaces", "--no-hosts", "--no-resolv",
		"--dhcp-authoritative",
		fmt.Sprintf("--dhcp-range=%s,%s,%s,%d", first, last, mask, int(r.Lease.Seconds())), // seconds
		"--dhcp-option=option:router," + r.Router, "--dhcp-option=option:dns-server," + r.Router,
		"--address=/outside.test/" + OutsideAddr,
		"--dhcp-leasefile=" + filepath.Join(r.Dir, RoomLeases), "--pid-file=" + filepath.Join(r.Dir, "dnsmasq.pid"),
		"--user=root", "--group=root", "--log-dhcp", "--log-queries"}
	httpd := []string{"busybox", "httpd", "-f", "-vv", "-p", "80", "-h", filepath.Join(r.Dir, "www")}
	for _, p := range []struct {
		argv []string
		log  string
	}{{dnsmasq, RoomDHCPLog}, {httpd, RoomHTTPLog}} {
		pid, err := c.startRoomProc(ctx, r, p.argv, filepath.Join(r.Dir, p.log))
		if err != nil {
			return err
		}
		r.PIDs = append(r.PIDs, pid)
		if err := c.save(); err != nil {
			return err
		}
	}
	// Listening: dnsmasq on the DHCP port (67, hex 0043) and DNS (53,
	// 0035), the web server on 80 (0050).
	deadline := time.Now().Add(30 * time.Second)
	for {
		udp, _ := exec.CommandContext(ctx, "ip", "netns", "exec", r.NetNS, "cat", "/proc/net/udp").Output()
		// busybox httpd listens on IPv6's any address, which takes IPv4 too.
		tcp, _ := exec.CommandContext(ctx, "ip", "netns", "exec", r.NetNS, "cat", "/proc/net/tcp", "/proc/net/tcp6").Output()
		if strings.Contains(string(udp), ":0043 ") && strings.Contains(string(udp), ":0035 ") && strings.Contains(string(tcp), ":0050 ") {
			return nil
		}
		for i, pid := range r.PIDs {
			if !procAlive(pid) {
				log, _ := os.ReadFile(filepath.Join(r.Dir, []string{RoomDHCPLog, RoomHTTPLog}[i]))
				return fmt.Errorf("the %s's %s exited: %s", r.Kind, []string{"dnsmasq", "web server"}[i], strings.TrimSpace(string(log)))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %s's dnsmasq and web server do not listen after 30 s (logs in %s)", r.Kind, r.Dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startRoomProc starts argv in the room's namespace, its output to log:
// detached like the cluster's QEMUs, or tethered to this process for an
// attached cluster (UpOptions.Attached).
func (c *Cluster) startRoomProc(ctx context.Context, r *RoomState, argv []string, log string) (int, error) {
	logf, err := os.Create(log)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	// Not CommandContext: the server outlives ctx, which is Up's.
	cmd := (&netns.NS{Name: r.NetNS}).Command(context.WithoutCancel(ctx), argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	start := cmd.Start
	if c.attached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		start = func() error { return tether.Start(cmd) }
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := start(); err != nil {
		return 0, fmt.Errorf("starting the %s's %s: %w", r.Kind, argv[0], err)
	}
	// Reaped when it exits, while this process lives; a detached one is
	// init's afterwards.
	go cmd.Wait()
	return cmd.Process.Pid, nil
}

// downRoom kills every process in the room's namespace and removes it and
// its veth. It works from the name alone, after a crash.
func downRoom(ctx context.Context, clusterNS, roomNS, port string) error {
	var errs []error
	if netns.Exists(roomNS) {
		out, _ := exec.CommandContext(ctx, "ip", "netns", "pids", roomNS).Output()
		var pids []int
		for f := range strings.FieldsSeq(string(out)) {
			// Everything in a room's namespace is the room's.
			if pid, err := strconv.Atoi(f); err == nil {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
					errs = append(errs, fmt.Errorf("killing pid %d in %s: %w", pid, roomNS, err))
				}
				pids = append(pids, pid)
			}
		}
		for _, pid := range pids {
			for i := 0; procAlive(pid) && i < 100; i++ {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	if netns.Exists(clusterNS) {
		(&netns.NS{Name: clusterNS}).IP(ctx, "link", "del", port)
	}
	if netns.Exists(roomNS) {
		if err := (&netns.NS{Name: roomNS}).Delete(ctx); err != nil && netns.Exists(roomNS) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// procAlive reports whether pid runs: a killed process whose parent has
// not reaped it yet (a zombie, with an empty command line) counts as gone.
func procAlive(pid int) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && len(cmdline) > 0
}
