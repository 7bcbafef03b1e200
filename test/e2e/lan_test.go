//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/tether"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// TestLANCluster boots the default ISO, unchanged, as node1 on a LAN that
// has its own DHCP server and router (`vm up --lan`: dnsmasq on
// 192.168.50.0/23, router .1, leases of two minutes), and two nodes that
// PXE boot there through node1's proxyDHCP. Its steps check what issue 11
// asks of such a room: node1 takes a lease and serves the LAN, says so in
// its banner, status and API, and renews its lease; the nodes are named by
// their host number on the /23 and take their addresses from the LAN's
// server, never from node1 (a capture of the LAN from the first packet
// shows it); MPI runs across all three with the image's own parameters;
// and a bystander on the LAN, with an address from its DHCP server, cannot
// mount node1's root nor fetch a node's boot script (its token).
func TestLANCluster(t *testing.T) {
	needE2E(t)
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatalf("the LAN capture needs tcpdump: %v (clusterdebian doctor --fix installs it)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	s := testsupport.NewScenario(t)
	boot := []string{"boot"}
	lan := netip.MustParsePrefix(vm.DefaultLAN)
	const name = "e2e-lan"

	var (
		c       vcluster
		nodes   []registry.Node
		naming  contract.Naming
		head    string // node1's address on the LAN
		a, b    string // the two nodes besides node1, in name order
		capture *lanCapture
	)
	s.Step("boot", nil, func(st *testing.T) {
		out, _ := defaultImage(st)
		var err error
		c, err = upCluster(t, ctx, vm.UpOptions{Name: name, ISO: filepath.Join(out, imagebuild.ISOName),
			Nodes: 2, MemoryMiB: 2048, NodeMemoryMiB: 1536, CPUs: 2, LAN: lan.String(),
			OnNetwork: func(vc *vm.Cluster) error {
				// From the first packet on: node1's whole boot and the
				// nodes' PXE boots.
				var err error
				capture, err = startLANCapture(t, vc)
				return err
			}})
		if err != nil {
			st.Fatalf("vm up --lan: %v", err)
		}
		nodes = c.waitNodes(st, ctx, "three nodes up", func(ns []registry.Node) bool { return len(upNodes(ns)) == 3 })
		n1, ok := byName(nodes, "node1")
		if !ok {
			st.Fatalf("no node1 in %+v", nodes)
		}
		head = n1.IP
		naming = contract.Naming{Subnet: lan, Head: netip.MustParseAddr(head)}
		var others []string
		for _, n := range nodes {
			if n.Name != "node1" {
				others = append(others, n.Name)
			}
		}
		slices.Sort(others)
		a, b = others[0], others[1]
		st.Logf("cluster on the LAN: node1 at %s, %s and %s", head, a, b)
	})

	s.Step("node1 leased its address on the LAN", boot, func(t *testing.T) {
		// node1's address is a lease of the LAN's server, under its name,
		// from the cluster NIC's MAC.
		if !lan.Contains(naming.Head) || naming.Head == netip.MustParseAddr(c.LAN.Router) {
			t.Fatalf("node1 is at %s, want an address the LAN's server leased on %s", head, lan)
		}
		if l, ok := roomLease(t, c.LAN, c.VMs[0].MAC); !ok || l.IP != naming.Head || l.Hostname != "node1" {
			t.Errorf("the LAN's leases give node1 (%s) %+v, want %s named node1", c.VMs[0].MAC, l, head)
		}
		// Only the head's DHCP client runs on the cluster card: live-boot's
		// ifup@ is stopped and no dhcpcd runs there.
		n := headNetwork(t, ctx, c.on("node1"))
		g := c.on("node1")
		if state := strings.TrimSpace(g.Sh(t, ctx, "systemctl is-active ifup@"+n.Interface+" || true")); state == "active" {
			t.Errorf("ifup@%s is %s on node1: the system's DHCP client runs beside the head's", n.Interface, state)
		}
		if ps := g.Sh(t, ctx, "pgrep -a dhcpcd || true; pgrep -a dhclient || true"); strings.Contains(ps, n.Interface) {
			t.Errorf("a DHCP client of the system runs on node1's cluster card %s:\n%s", n.Interface, ps)
		}
	})

	s.Step("network status", boot, func(t *testing.T) {
		// The API, status and the banner say proxyDHCP on the LAN, beside
		// its server, and why.
		want := fmt.Sprintf("proxyDHCP on %s beside the DHCP server %s (it answered node1 and leased it %s)", lan, c.LAN.Router, head)
		n := headNetwork(t, ctx, c.on("node1"))
		if n.Summary != want || n.Mode != "proxy" || n.ConfiguredMode != "auto" || n.AddressSource != "lease" || n.Subnet != lan.String() ||
			n.Address != head || n.Lease == nil || n.Lease.Server != c.LAN.Router || n.Lease.Router != c.LAN.Router || n.NAT != nil {
			t.Errorf("GET /api/v1/network: %+v, want summary %q", n, want)
		}
		if st := c.on("node1").Sh(t, ctx, "clusterdebian status"); !strings.Contains(st, "Network: "+want) {
			t.Errorf("clusterdebian status lacks %q:\n%s", "Network: "+want, st)
		}
		issue := c.on("node1").Sh(t, ctx, "cat /etc/issue")
		if !strings.Contains(issue, "Network: "+want) || !strings.Contains(issue, "Address: "+head+" ") {
			t.Errorf("the login banner lacks node1's network and address:\n%s", issue)
		}
	})

	s.Step("names by host number on the /23", boot, func(t *testing.T) {
		// Every node's address is the LAN server's lease for its MAC, its
		// name follows the host-number rule, and the head's script log,
		// the node's host name and its BOOTIF agree.
		headLog := c.on("node1").Sh(t, ctx, "journalctl -u clusterdebian-head --no-pager -o cat")
		for _, n := range nodes {
			addr := netip.MustParseAddr(n.IP)
			want, err := naming.Name(addr)
			if err != nil || n.Name != want {
				t.Errorf("%s at %s: want the name %s (%v)", n.Name, n.IP, want, err)
			}
			if got := strings.TrimSpace(c.on(n.Name).Sh(t, ctx, "hostname")); got != n.Name {
				t.Errorf("%s calls itself %q", n.Name, got)
			}
			if n.Name == "node1" {
				continue
			}
			if l, ok := roomLease(t, c.LAN, n.MAC); !ok || l.IP != addr {
				t.Errorf("%s (%s) is at %s, not at its lease from the LAN's server (%+v)", n.Name, n.MAC, n.IP, l)
			}
			if !regexp.MustCompile(`msg="ipxe script" mac=` + regexp.QuoteMeta(n.MAC) + ` ip=` + regexp.QuoteMeta(n.IP) + ` node=` + n.Name + `\b`).MatchString(headLog) {
				t.Errorf("the head's log has no script for %s (%s) at %s", n.Name, n.MAC, n.IP)
			}
			if regexp.MustCompile(`forbidden: ` + regexp.QuoteMeta(n.MAC)).MatchString(headLog) {
				t.Errorf("the head refused %s's own boot script (%s) at some point:\n%s", n.Name, n.MAC, headLog)
			}
			bootif := "BOOTIF=01-" + strings.ReplaceAll(n.MAC, ":", "-")
			if cmdline := c.on(n.Name).Sh(t, ctx, "cat /proc/cmdline"); !slices.Contains(strings.Fields(cmdline), bootif) {
				t.Errorf("%s's kernel command line lacks %s: %s", n.Name, bootif, cmdline)
			}
		}
	})

	s.Step("cluster files follow the LAN", boot, func(t *testing.T) {
		hosts := c.on("node1").Sh(t, ctx, "cat /etc/hosts")
		for _, n := range nodes {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n.IP) + `\s+` + n.Name + `\b`).MatchString(hosts) {
				t.Errorf("/etc/hosts lacks %s %s:\n%s", n.IP, n.Name, hosts)
			}
		}
		if strings.Contains(hosts, clusterHead) {
			t.Errorf("/etc/hosts still has the private switch's %s:\n%s", clusterHead, hosts)
		}
		sshConf := c.on("node1").Sh(t, ctx, "cat /etc/ssh/ssh_config.d/clusterdebian.conf")
		if !regexp.MustCompile(`(?m)^Host node\* \*\.cluster 192\.168\.50\.\* 192\.168\.51\.\*$`).MatchString(sshConf) || strings.Contains(sshConf, "10.99.0.") {
			t.Errorf("the ssh client drop-in does not cover the /23 alone:\n%s", sshConf)
		}
		// By address too, without a prompt.
		if got := strings.TrimSpace(c.on("node1").Sh(t, ctx, "runuser -u user -- ssh -o BatchMode=yes "+nodeIP(t, nodes, b)+" hostname")); got != b {
			t.Errorf("ssh to %s's address: %q", b, got)
		}
		checkExports(t, c.on("node1").Sh(t, ctx, "exportfs -s"), "/", nodeIP(t, nodes, a), nodeIP(t, nodes, b))
	})

	s.Step("mpi", boot, func(t *testing.T) {
		// No --mca flags: the image's system-wide parameters keep MPI on
		// the LAN's subnet.
		for _, f := range []string{"/etc/openmpi/openmpi-mca-params.conf", "/etc/openmpi/prte-mca-params.conf"} {
			if conf := c.on("node1").Sh(t, ctx, "cat "+f); !strings.Contains(conf, lan.String()) {
				t.Errorf("%s does not name the LAN %s:\n%s", f, lan, conf)
			}
		}
		compileMPI(t, ctx, c.on("node1"))
		runMPI(t, ctx, c.on("node1"), 6, 3)
	})

	s.Step("nodes reach the outside through the LAN's router", boot, func(t *testing.T) {
		// The LAN's DHCP server gave the node its router and DNS server,
		// and the outside sees the node itself (no NAT on node1).
		conf := c.on(a).Sh(t, ctx, "cat /run/net-*.conf")
		for _, want := range []string{"IPV4GATEWAY='" + c.LAN.Router + "'", "IPV4DNS0='" + c.LAN.Router + "'"} {
			if !strings.Contains(conf, want) {
				t.Errorf("%s's DHCP configuration lacks %s:\n%s", a, want, conf)
			}
		}
		if got := whoami(t, ctx, c.on(a)); got != nodeIP(t, nodes, a) {
			t.Errorf("the outside sees %s as %q, want its own address %s", a, got, nodeIP(t, nodes, a))
		}
	})

	s.Step("node1 offered no address", boot, func(t *testing.T) {
		// The capture of the LAN since before node1 booted: node1 sent
		// DHCP replies (proxy offers and acks, its boot information), none
		// with an address; the LAN's server sent addresses.
		pkts := capture.stop(t)
		headMAC, headIP := c.VMs[0].MAC, netip.MustParseAddr(head)
		var fromHead, fromLAN int
		for _, p := range pkts {
			if p.msg.OpCode != dhcpv4.OpcodeBootReply {
				continue
			}
			if p.srcMAC == headMAC || p.srcIP == headIP {
				fromHead++
				t.Logf("node1 sent a %s from port %d to %s", p.msg.MessageType(), p.srcPort, p.msg.ClientHWAddr)
				if !p.msg.YourIPAddr.IsUnspecified() {
					t.Errorf("node1 offered an address on the LAN:\n%s", p.msg.Summary())
				}
			} else if !p.msg.YourIPAddr.IsUnspecified() {
				fromLAN++
			}
		}
		if fromHead == 0 || fromLAN == 0 {
			t.Errorf("the capture holds %d DHCP replies from node1 and %d with an address from the LAN's server; want both (the nodes PXE booted through both)", fromHead, fromLAN)
		}
		t.Logf("the LAN's capture: %d DHCP packets; %d replies from node1, none with an address; %d with an address from the LAN's server", len(pkts), fromHead, fromLAN)
	})

	s.Step("bystanders get nothing", boot, func(t *testing.T) {
		// A machine on the LAN that did not boot from node1, with an
		// address from the LAN's DHCP server: its own boot script and a
		// booted node's are refused, and it cannot mount node1's root
		// (NFSv3 or v4), nor can one outside the LAN's subnet.
		by := newLANBystander(t, ctx, c.Cluster)
		for _, mac := range []string{nodeMAC(t, nodes, a), by.mac} {
			code := by.httpCode(t, ctx, fmt.Sprintf("http://%s/boot/%s.ipxe", head, mac))
			if code != "403" {
				t.Errorf("the bystander at %s fetched the boot script of %s: HTTP %s, want 403", by.addr, mac, code)
			}
		}
		headLog := c.on("node1").Sh(t, ctx, "journalctl -u clusterdebian-head --no-pager -o cat")
		for _, want := range []string{
			fmt.Sprintf("forbidden: %s asked from %s, but DHCP gave that machine %s", nodeMAC(t, nodes, a), by.addr.Addr(), nodeIP(t, nodes, a)),
			fmt.Sprintf("forbidden: %s asked from %s without a DHCP exchange", by.mac, by.addr.Addr()),
		} {
			if !strings.Contains(headLog, want) {
				t.Errorf("the head's log lacks %q", want)
			}
		}
		// The same bystander, its MAC and its lease, now on b's wire, where
		// NFS can be tried; and one outside the LAN's subnet.
		by.leave(t, ctx)
		mountFromOutsideAt(t, ctx, c.on("node1"), c.on(b), head, "/", []string{"3", "4"},
			bystander{addr: by.addr, mac: by.mac}, bystander{addr: netip.MustParsePrefix(outsiderAddr + "/24")})
	})

	s.Step("node1 renews its lease", boot, func(t *testing.T) {
		// The LAN's leases last two minutes: node1's lease starts again
		// at each renewal, with the same address.
		first := headNetwork(t, ctx, c.on("node1"))
		var last registry.Network
		testsupport.WaitFor(t, ctx, "node1's lease to be renewed", 5*time.Second, 5*time.Minute, func() bool {
			last = headNetwork(t, ctx, c.on("node1"))
			return last.Lease != nil && first.Lease != nil && last.Lease.Start.After(first.Lease.Start)
		}, func() string { return fmt.Sprintf("lease %+v, first %+v", last.Lease, first.Lease) })
		if last.Address != head || last.AddressSource != "lease" || last.Mode != "proxy" {
			t.Errorf("after a renewal node1's network is %+v, want %s leased, proxy", last, head)
		}
		if log, _ := os.ReadFile(filepath.Join(c.LAN.Dir, vm.RoomDHCPLog)); !regexp.MustCompile(`DHCPACK\(lan0\) ` + regexp.QuoteMeta(head) + ` ` + c.VMs[0].MAC + ` node1`).Match(log) {
			t.Errorf("the LAN's DHCP log shows no ACK of %s to node1", head)
		}
	})

	s.Step("nodes keep their leases", boot, func(t *testing.T) {
		// The nodes' addresses are the LAN server's two-minute leases,
		// taken in the initramfs: each node's agent renews its own (the
		// head says it serves no addresses), so the server never sees
		// them run out and never gives a running node's address away.
		dhcpLog, _ := os.ReadFile(filepath.Join(c.LAN.Dir, vm.RoomDHCPLog))
		for _, n := range nodes {
			if n.Name == "node1" {
				continue
			}
			log := c.on(n.Name).Sh(t, ctx, "journalctl -u clusterdebian-node -b --no-pager -o cat | grep -F 'DHCP' || true")
			if !strings.Contains(log, "keeping this node's lease") || !strings.Contains(log, "DHCP lease extended") {
				t.Errorf("%s's agent neither took nor renewed its lease:\n%s", n.Name, log)
			}
			if l, ok := roomLease(t, c.LAN, n.MAC); !ok || l.IP.String() != n.IP || !l.Expires.After(time.Now()) {
				t.Errorf("%s (%s at %s): the LAN server's lease is %+v (found %v), want it current", n.Name, n.MAC, n.IP, l, ok)
			}
			if !regexp.MustCompile(`DHCPACK\(lan0\) ` + regexp.QuoteMeta(n.IP) + ` ` + n.MAC + ` ` + n.Name).Match(dhcpLog) {
				t.Errorf("the LAN's DHCP log shows no ACK of %s to %s under its name", n.IP, n.Name)
			}
		}
	})

	s.Step("doctor", boot, func(t *testing.T) {
		// On node1, doctor checks the running cluster by default: every
		// check passes, for proxyDHCP (67 and 4011) and the shared root
		// (/ exported to both nodes).
		out, code := c.on("node1").Try(t, ctx, "clusterdebian doctor")
		t.Logf("clusterdebian doctor on node1 (exit %d):\n%s", code, out)
		if code != 0 {
			t.Errorf("doctor exited %d on a healthy cluster", code)
		}
		checks := doctorLines(out)
		for _, name := range []string{"ports", "exports", "state", "memory", "certs", "heartbeats"} {
			if st, ok := checks[name]; !ok || !strings.HasPrefix(st, "OK") {
				t.Errorf("doctor's %s check: %q, want OK", name, st)
			}
		}
		if !strings.Contains(checks["ports"], "udp 0.0.0.0:4011") || !strings.Contains(checks["ports"], "tcp "+head+":80") {
			t.Errorf("doctor's ports check does not name proxyDHCP's 4011 and HTTP on %s: %q", head, checks["ports"])
		}
		if !strings.Contains(checks["exports"], "/ exported to all 2 registered nodes") {
			t.Errorf("doctor's exports check: %q, want / exported to both nodes", checks["exports"])
		}
	})

	// From here on, steps change the cluster.

	s.Step("doctor names a node that missed heartbeats", boot, func(t *testing.T) {
		// b powered off hard: once the head marks it down, doctor warns
		// and names it (a WARN: the cluster runs on, doctor exits 0).
		if err := c.Stop(b); err != nil {
			t.Fatal(err)
		}
		c.waitNodes(t, ctx, b+" down", func(ns []registry.Node) bool {
			n, ok := byName(ns, b)
			return ok && n.State == registry.StateDown
		})
		out, code := c.on("node1").Try(t, ctx, "clusterdebian doctor")
		t.Logf("clusterdebian doctor on node1 with %s off (exit %d):\n%s", b, code, out)
		hb := doctorLines(out)["heartbeats"]
		if code != 0 || !strings.HasPrefix(hb, "WARN") || !strings.Contains(hb, b+" (") || strings.Contains(hb, a+" (") {
			t.Errorf("doctor with %s off: exit %d, heartbeats %q; want exit 0 and a WARN naming %s alone", b, code, hb, b)
		}
	})
}

func nodeMAC(t *testing.T, nodes []registry.Node, name string) string {
	t.Helper()
	n, ok := byName(nodes, name)
	if !ok {
		t.Fatalf("no %s in %+v", name, nodes)
	}
	return n.MAC
}

// lanCapture is tcpdump on the cluster's bridge, the LAN, writing DHCP
// and proxyDHCP packets to a file.
type lanCapture struct {
	cmd    *exec.Cmd
	file   string
	done   chan struct{}
	waited error
}

// startLANCapture starts the capture in the cluster's namespace and waits
// until tcpdump listens. It dies with the test binary, and stops when t
// ends.
func startLANCapture(t *testing.T, vc *vm.Cluster) (*lanCapture, error) {
	dir := t.TempDir()
	c := &lanCapture{file: filepath.Join(dir, "lan.pcap"), done: make(chan struct{})}
	logPath := filepath.Join(dir, "tcpdump.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	c.cmd = (&netns.NS{Name: vc.NetNS}).Command(context.Background(), "tcpdump", "-i", vc.Bridge, "-U", "-n", "-w", c.file,
		"udp port 67 or udp port 68 or udp port 4011")
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := tether.Start(c.cmd); err != nil {
		return nil, fmt.Errorf("tcpdump: %w", err)
	}
	go func() { c.waited = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.cmd.Process.Kill(); <-c.done })
	err = testsupport.Poll(context.Background(), 100*time.Millisecond, 30*time.Second, func() bool {
		data, _ := os.ReadFile(logPath)
		return strings.Contains(string(data), "listening on")
	})
	if err != nil {
		data, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("tcpdump on %s did not start: %v: %s", vc.Bridge, err, data)
	}
	return c, nil
}

// dhcpPacket is one DHCP or proxyDHCP packet of the capture.
type dhcpPacket struct {
	srcMAC  string // the Ethernet source
	srcIP   netip.Addr
	srcPort uint16 // 67 for a server, 4011 for proxyDHCP's boot server
	msg     *dhcpv4.DHCPv4
}

// stop ends the capture and reads it back: every UDP packet to or from
// the DHCP and proxyDHCP ports, decoded here (tcpdump decodes port 4011
// as nothing).
func (c *lanCapture) stop(t *testing.T) []dhcpPacket {
	t.Helper()
	c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("tcpdump did not stop on SIGINT")
	}
	data, err := os.ReadFile(c.file)
	if err != nil {
		t.Fatal(err)
	}
	frames, err := readPcap(data)
	if err != nil {
		t.Fatalf("reading the capture %s: %v", c.file, err)
	}
	var pkts []dhcpPacket
	for _, f := range frames {
		p, err := decodeDHCPFrame(f)
		if err != nil {
			t.Errorf("a packet of the capture: %v", err)
			continue
		}
		pkts = append(pkts, p)
	}
	if len(pkts) == 0 {
		t.Fatalf("the capture %s holds no DHCP packet", c.file)
	}
	return pkts
}

// readPcap returns the frames of a pcap file of Ethernet frames, as
// tcpdump -w writes it (in this machine's byte order, or the other).
func readPcap(data []byte) ([][]byte, error) {
	if len(data) < 24 {
		return nil, fmt.Errorf("%d bytes, no pcap header", len(data))
	}
	var order binary.ByteOrder
	switch binary.LittleEndian.Uint32(data) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		order = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = binary.BigEndian
	default:
		return nil, fmt.Errorf("not a pcap file (magic %x)", data[:4])
	}
	if link := order.Uint32(data[20:]); link != 1 {
		return nil, fmt.Errorf("link type %d, want Ethernet (1)", link)
	}
	var frames [][]byte
	for rest := data[24:]; len(rest) > 0; {
		if len(rest) < 16 {
			return nil, fmt.Errorf("a record header cut short")
		}
		n := int(order.Uint32(rest[8:]))
		if len(rest) < 16+n {
			return nil, fmt.Errorf("a record of %d bytes cut short", n)
		}
		frames = append(frames, rest[16:16+n])
		rest = rest[16+n:]
	}
	return frames, nil
}

// decodeDHCPFrame reads an Ethernet frame of IPv4 UDP carrying a DHCP
// message.
func decodeDHCPFrame(f []byte) (dhcpPacket, error) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		return dhcpPacket{}, fmt.Errorf("not an IPv4 frame: % x", f[:min(len(f), 16)])
	}
	p := dhcpPacket{srcMAC: net.HardwareAddr(f[6:12]).String()}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != 17 || len(ip) < ihl+8 {
		return p, fmt.Errorf("%s: not UDP", p.srcMAC)
	}
	p.srcIP = netip.AddrFrom4([4]byte(ip[12:16]))
	udp := ip[ihl:]
	p.srcPort = binary.BigEndian.Uint16(udp)
	msg, err := dhcpv4.FromBytes(udp[8:])
	if err != nil {
		return p, fmt.Errorf("%s (%s:%d): not DHCP: %v", p.srcMAC, p.srcIP, p.srcPort, err)
	}
	p.msg = msg
	return p, nil
}

// lanBystander is a namespace of this machine on the LAN: a veth on the
// cluster's bridge, with an address leased from the LAN's DHCP server.
type lanBystander struct {
	ns   *netns.NS
	vc   *vm.Cluster
	port string
	mac  string
	addr netip.Prefix
}

// leaseOnSwitch plugs the namespace ns into the VM cluster's switch through
// a veth (port on the switch's side, eth0 with mac in ns) and has whichever
// DHCP server answers there lease it an address. unplug removes the veth.
// what names the exchange in the fatal error when no lease comes.
func leaseOnSwitch(t *testing.T, ctx context.Context, vc *vm.Cluster, ns *netns.NS, port, mac, what string) (lease *nclient4.Lease, unplug func()) {
	t.Helper()
	cluster := &netns.NS{Name: vc.NetNS}
	if err := netns.AddVeth(ctx, cluster, port, ns, "eth0"); err != nil {
		t.Fatal(err)
	}
	unplug = func() { cluster.IP(context.Background(), "link", "del", port) }
	if err := cluster.SetMaster(ctx, port, vc.Bridge); err != nil {
		unplug()
		t.Fatal(err)
	}
	if err := ns.IP(ctx, "link", "set", "eth0", "address", mac); err != nil {
		unplug()
		t.Fatal(err)
	}
	hw, _ := net.ParseMAC(mac)
	err := ns.Do(func() error {
		cl, err := nclient4.New("eth0", nclient4.WithHWAddr(hw), nclient4.WithTimeout(5*time.Second), nclient4.WithRetry(5))
		if err != nil {
			return err
		}
		defer cl.Close()
		lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		lease, err = cl.Request(lctx)
		return err
	})
	if err != nil {
		unplug()
		t.Fatalf("%s (%s): %v", what, mac, err)
	}
	return lease, unplug
}

// newLANBystander puts a bystander on the LAN and has the LAN's DHCP
// server lease it an address, as any machine there would.
func newLANBystander(t *testing.T, ctx context.Context, vc *vm.Cluster) *lanBystander {
	t.Helper()
	by := &lanBystander{ns: newNS(t), vc: vc, port: "vbys", mac: randomMAC()}
	lease, unplug := leaseOnSwitch(t, ctx, vc, by.ns, by.port, by.mac, "the bystander's DHCP on the LAN")
	t.Cleanup(unplug)
	ip, _ := netip.AddrFromSlice(lease.ACK.YourIPAddr.To4())
	ones, _ := lease.ACK.SubnetMask().Size()
	by.addr = netip.PrefixFrom(ip, ones)
	if srv := lease.ACK.ServerIdentifier(); srv.String() != vc.LAN.Router || !netip.MustParsePrefix(vc.LAN.Subnet).Contains(ip) {
		t.Fatalf("the bystander got %s from %s, want an address on %s from %s", by.addr, srv, vc.LAN.Subnet, vc.LAN.Router)
	}
	if err := by.ns.AddAddr(ctx, "eth0", by.addr); err != nil {
		t.Fatal(err)
	}
	t.Logf("bystander %s leased %s from the LAN's server", by.mac, by.addr)
	return by
}

// httpCode fetches url from the bystander and returns the HTTP status.
func (by *lanBystander) httpCode(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	out, err := by.ns.Output(ctx, "curl", "-s", "-o", "/dev/null", "--max-time", "60", "-w", "%{http_code}", url)
	if err != nil {
		t.Fatalf("curl %s from the bystander: %v", url, err)
	}
	return strings.TrimSpace(string(out))
}

// leave takes the bystander off the LAN, so that its MAC and address can
// appear elsewhere on the wire.
func (by *lanBystander) leave(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := (&netns.NS{Name: by.vc.NetNS}).IP(ctx, "link", "del", by.port); err != nil {
		t.Fatal(err)
	}
}

// doctorLines maps each check of `clusterdebian doctor`'s output ("OK    ports  ...")
// to its line.
func doctorLines(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && (f[0] == "OK" || f[0] == "WARN" || f[0] == "FAIL") {
			m[f[1]] = line
		}
	}
	return m
}
