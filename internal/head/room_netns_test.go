package head

// TestHeadOnLAN and TestHeadWithUplink start a whole head in-process in a
// network namespace, as TestHeadInNetns does, in the two rooms of issue 11
// that the private switch of TestHeadInNetns is not:
//
// The LAN (TestHeadOnLAN): dnsmasq serves 192.168.50.0/23 with its own
// router (.1, not node1). The head, in auto mode with an empty state
// folder, must take an address there by DHCP (its own MAC, named node1),
// make that /23 its cluster network, serve proxyDHCP pointing at its leased
// address, hand out no address (a capture on the LAN's bridge shows what
// node1 sent), and renew its lease (dnsmasq's shortest lease, two minutes:
// the renewal comes after about one).
//
//	cdt-ln…  br0 192.168.50.1/23, dnsmasq; tcpdump on br0
//	   ├─ veth ─ cdt-lh…  eth0 (node1, MAC 02:cd:00:00:00:01)
//	   └─ veth ─ cdt-lc…  eth0 (a PXE client, MAC 02:cd:00:00:00:20)
//
// The uplink (TestHeadWithUplink): the head serves addresses on a private
// segment, and has a second interface into an "uplink" namespace with its
// default route there. A client must get node1 as router and DNS, and
// reach an HTTP server in the uplink namespace through node1's NAT (the
// server sees node1's uplink address), while the uplink side cannot reach
// the client; the rules stay when the head stops.
//
//	cdt-uc…  eth0 (client) ─ veth ─ cdt-uh…  eth0 (cluster), up0 172.31.0.2/24
//	                                          default via 172.31.0.1
//	                                   up0 ─ veth ─ cdt-uu…  up0 172.31.0.1/24, HTTP :8080

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
)

const (
	// roomChildEnv, set to "lan" or "uplink", makes the test the child
	// that runs the head; roomEnv passes the other namespaces' names.
	roomChildEnv = "CLUSTERDEBIAN_TEST_ROOM"
	roomEnv      = "CLUSTERDEBIAN_TEST_ROOM_NS"
	headMAC      = "02:cd:00:00:00:01"
	pxeMAC       = "02:cd:00:00:00:20"
	lanNet       = "192.168.50.0/23"
	lanServerIP  = "192.168.50.1"
)

// needTools skips the test unless the machine has each tool (udhcpc
// standing also for busybox's).
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		found := udhcpc() != nil
		if tool != "udhcpc" {
			_, err := exec.LookPath(tool)
			found = err == nil
		}
		if !found {
			t.Skipf("needs %s (clusterdebian doctor --fix installs it)", tool)
		}
	}
}

// lanRoom makes the LAN of TestHeadOnLAN and TestHeadMovesToLAN: three
// namespaces named by the prefixes, the LAN's with a bridge br0 at
// lanServerIP/23, and node1 (MAC headMAC) and a PXE client (MAC pxeMAC),
// each with an eth0 on that bridge.
func lanRoom(t *testing.T, ctx context.Context, lanPrefix, headPrefix, clientPrefix string) (lan, head, client *netns.NS) {
	t.Helper()
	nss := testsupport.Namespaces(t, ctx, lanPrefix, headPrefix, clientPrefix)
	lan, head, client = nss[0], nss[1], nss[2]
	must(t, lan.AddBridge(ctx, "br0", netip.MustParsePrefix(lanServerIP+"/23")))
	must(t, netns.AddVeth(ctx, lan, "ph", head, "eth0"))
	must(t, netns.AddVeth(ctx, lan, "pc", client, "eth0"))
	must(t, lan.SetMaster(ctx, "ph", "br0"))
	must(t, lan.SetMaster(ctx, "pc", "br0"))
	must(t, head.IP(ctx, "link", "set", "eth0", "address", headMAC))
	must(t, client.IP(ctx, "link", "set", "eth0", "address", pxeMAC))
	return lan, head, client
}

// startLANServer starts dnsmasq as the LAN's DHCP server on br0 in lan:
// addresses from 192.168.50.100 to 192.168.51.200 for leaseTime (dnsmasq's
// form: "2m"), lanServerIP as router, the extra options given, its leases
// in dir/dnsmasq.leases. It returns once dnsmasq listens, with its log;
// dnsmasq stops, and its log goes to the test's, at the end of the test.
func startLANServer(t *testing.T, ctx context.Context, lan *netns.NS, dir, leaseTime string, options ...string) *syncbuf.Buffer {
	t.Helper()
	args := []string{"--no-daemon", "--conf-file=/dev/null", "--interface=br0", "--bind-interfaces",
		"--port=0", "--no-hosts", "--no-resolv", "--no-ping", "--dhcp-authoritative",
		"--dhcp-range=192.168.50.100,192.168.51.200,255.255.254.0," + leaseTime,
		"--dhcp-option=option:router," + lanServerIP,
		"--dhcp-leasefile=" + filepath.Join(dir, "dnsmasq.leases"), "--pid-file=" + filepath.Join(dir, "dnsmasq.pid"),
		"--user=root", "--group=root", "--log-facility=-", "--log-dhcp"}
	var logBuf syncbuf.Buffer
	server := lan.Command(ctx, "dnsmasq", append(args, options...)...)
	server.Stdout, server.Stderr = &logBuf, &logBuf
	must(t, server.Start())
	t.Cleanup(func() {
		server.Process.Kill()
		server.Wait()
		t.Logf("dnsmasq:\n%s", logBuf.String())
	})
	waitFor(t, "dnsmasq to listen", func() bool {
		out, _ := inNS(lan.Name, "cat", "/proc/net/udp")
		return strings.Contains(out, ":0043 ")
	})
	return &logBuf
}

// roomMachine makes the fake machine a room's head runs on: its network
// is this (the child's) namespace, with eth0 as its only physical card;
// the cluster root is dir/root, the state folder in it is on a tmpfs of
// its own, and the boot files (dir/boot) are standIns.
func roomMachine(t *testing.T) (dir, root, stateDir string, sys *fakeSystem) {
	t.Helper()
	dir = t.TempDir()
	root = filepath.Join(dir, "root")
	stateDir = filepath.Join(root, "var/lib/clusterdebian")
	must(t, os.MkdirAll(stateDir, 0o700))
	t.Cleanup(mountStateTmpfs(t, stateDir))
	for rel, content := range standIns {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if after, ok := strings.CutPrefix(rel, "state/"); ok {
			p = filepath.Join(stateDir, filepath.FromSlash(after))
		}
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(content), 0o644))
	}
	sys = newFakeSystem(root)
	sys.network = HostSystem() // inside this namespace, which the test owns
	sys.physical = map[string]bool{"eth0": true}
	return dir, root, stateDir, sys
}

// restartable is a head in server mode on nsSubnet, in a room machine's
// folders (roomMachine), that a test starts, stops and starts again on
// the same state folder, reading what each start logged.
type restartable struct {
	stateDir string
	opts     Options
	logs     syncbuf.Buffer
	since    int // where the current start's log begins
}

func newRestartable(t *testing.T) *restartable {
	dir, root, stateDir, sys := roomMachine(t)
	must(t, os.MkdirAll(filepath.Join(dir, "ipxe"), 0o755))
	r := &restartable{stateDir: stateDir}
	r.opts = Options{
		Subnet:      nsSubnet,
		DHCP:        dhcp.ModeServer,
		BootDir:     filepath.Join(dir, "boot"),
		StateDir:    stateDir,
		IPXEDir:     filepath.Join(dir, "ipxe"),
		ClusterRoot: root,
		Logger:      slog.New(slog.NewTextHandler(io.MultiWriter(&testLog{t: t}, &r.logs), nil)),
		System:      sys,
		// Its nodes are made up, and talk from node1: who may register
		// is TestHeadAccessAudit's and TestHeadInNetns's.
		SimulatedNodes: true,
	}
	return r
}

// start starts the head and returns it with its stop, which the test's
// cleanup calls too. New must succeed whatever the state folder holds.
func (r *restartable) start(t *testing.T, what string) (*Head, func()) {
	t.Helper()
	r.since = len(r.logs.String())
	ctx, cancel := context.WithCancel(context.Background())
	h, err := New(ctx, r.opts)
	if err != nil {
		cancel()
		t.Fatalf("%s: the head does not start: %v", what, err)
	}
	served := make(chan error, 1)
	go func() { served <- h.Serve(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { awaitEnd(t, cancel, served, "Serve") }) }
	t.Cleanup(stop)
	waitUDP(t, 67, served)
	return h, stop
}

// log is what the head logged since its last start.
func (r *restartable) log() string { return r.logs.String()[r.since:] }

// awaitEnd cancels a head's context and waits for what (the name of the
// call: Serve, Run) to send its result on done.
func awaitEnd(t *testing.T, cancel context.CancelFunc, done <-chan error, what string) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(guard):
		t.Errorf("%s did not return after its context ended", what)
	}
}

// runRoomChild runs the test again inside the head's namespace, with env,
// and requires it to pass.
func runRoomChild(t *testing.T, ctx context.Context, head *netns.NS, name, room string, env ...string) {
	t.Helper()
	cmd := head.Command(ctx, os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), roomChildEnv+"="+room), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("the head's process in namespace %s:\n%s", head.Name, out)
	if err != nil {
		t.Fatalf("the head's process failed: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+name)) {
		t.Fatalf("the head's process did not run %s to a pass", name)
	}
}

// startRoomHead starts a head in this (the child's) namespace on a
// roomMachine. It returns the head and the machine,
// and stops the head at the end of the test; stop stops it earlier.
func startRoomHead(t *testing.T, change func(*Options)) (h *Head, sys *fakeSystem, root string, stop func()) {
	t.Helper()
	dir, root, stateDir, sys := roomMachine(t)
	must(t, os.MkdirAll(filepath.Join(dir, "ipxe"), 0o755))
	opts := Options{
		Subnet:      nsSubnet,
		BootDir:     filepath.Join(dir, "boot"),
		StateDir:    stateDir,
		IPXEDir:     filepath.Join(dir, "ipxe"),
		ClusterRoot: root,
		Logger:      slog.New(slog.NewTextHandler(&testLog{t: t}, nil)),
		System:      sys,
	}
	change(&opts)
	ctx, cancel := context.WithCancel(context.Background())
	h, err := New(ctx, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- h.Serve(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { awaitEnd(t, cancel, served, "Serve") }) }
	t.Cleanup(stop)
	waitUDP(t, 67, served)
	return h, sys, root, stop
}

// getNetwork asks the head's API for its network.
func getNetwork(t *testing.T, h *Head) registry.Network {
	t.Helper()
	n, err := registry.NewClient("http://"+h.Addr().String(), "", nil).Network(context.Background())
	must(t, err)
	return n
}

// inNS runs a command in a namespace and returns its output.
func inNS(ns string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), ns, err, out)
	}
	return string(out), nil
}

func TestHeadOnLAN(t *testing.T) {
	if os.Getenv(roomChildEnv) == "lan" {
		lanChild(t, strings.Fields(os.Getenv(roomEnv)))
		return
	}
	needTools(t, "dnsmasq", "tcpdump", "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 10*guard)
	defer cancel()
	lan, head, client := lanRoom(t, ctx, "ln", "lh", "lc")

	dir := t.TempDir()
	capture := filepath.Join(dir, "lan.pcap")
	tcpdump := lan.Command(ctx, "tcpdump", "-i", "br0", "-U", "-n", "-w", capture, "udp port 67 or udp port 68 or udp port 4011")
	var tcpdumpErr syncbuf.Buffer
	tcpdump.Stderr = &tcpdumpErr
	must(t, tcpdump.Start())
	// The head must find the LAN's server at its start: wait until it
	// listens, and until tcpdump captures.
	logBuf := startLANServer(t, ctx, lan, dir, "2m", "--dhcp-option=option:dns-server,"+lanServerIP)
	waitFor(t, "tcpdump to capture", func() bool { return strings.Contains(tcpdumpErr.String(), "listening on") })

	runRoomChild(t, ctx, head, "TestHeadOnLAN", "lan", roomEnv+"="+client.Name)

	tcpdump.Process.Signal(os.Interrupt)
	tcpdump.Wait()
	// What node1 sent on the LAN as a DHCP server: replies (proxy offers
	// and acks), and never an address.
	out, err := exec.Command("tcpdump", "-r", capture, "-n", "-v", "ether src "+headMAC+" and udp src port 67 or udp src port 4011").CombinedOutput()
	if err != nil {
		t.Fatalf("reading the capture: %v\n%s", err, out)
	}
	replies := strings.Count(string(out), "BOOTP/DHCP, Reply")
	if replies == 0 || strings.Contains(string(out), "Your-IP") {
		t.Errorf("node1 sent %d DHCP replies on the LAN, want some, none with an address:\n%s", replies, out)
	}
	// And it asked for its own address as node1, from its own MAC.
	data, _ := os.ReadFile(filepath.Join(dir, "dnsmasq.leases"))
	if !strings.Contains(string(data), headMAC) || !strings.Contains(string(data), " node1 ") {
		t.Errorf("dnsmasq's leases lack node1 (%s):\n%s", headMAC, data)
	}
	// Its first request and at least one renewal.
	if n := strings.Count(logBuf.String(), " "+headMAC+" node1\n"); n < 2 || !strings.Contains(logBuf.String(), "DHCPREQUEST(br0) 192.168.5") {
		t.Errorf("dnsmasq acked node1 %d times, want its lease and a renewal", n)
	}
}

// lanChild is TestHeadOnLAN inside the head's namespace.
func lanChild(t *testing.T, env []string) {
	client := env[0]
	h, _, root, _ := startRoomHead(t, func(o *Options) { o.DHCP = dhcp.ModeAuto })
	lan := netip.MustParsePrefix(lanNet)

	// node1 took an address on the LAN, and the LAN is the cluster network.
	if !lan.Contains(h.Addr()) || h.Naming().Subnet != lan || h.plan.source != srcLease {
		t.Fatalf("head at %v on %v (%s), want a lease on %v", h.Addr(), h.Naming().Subnet, h.plan.source, lan)
	}
	head := h.Addr().String()
	n := getNetwork(t, h)
	if n.Mode != "proxy" || n.AddressSource != "lease" || n.Subnet != lanNet || n.Lease == nil || n.Lease.Server != lanServerIP ||
		!strings.HasPrefix(n.Summary, "proxyDHCP on "+lanNet+" beside the DHCP server "+lanServerIP+" (it answered node1 and leased it "+head+")") {
		t.Errorf("GET /api/v1/network: %+v", n)
	}
	// The head writes network.json from its status loop, after it serves.
	var data []byte
	waitFor(t, "network.json to name node1's address "+head, func() bool {
		data, _ = os.ReadFile(filepath.Join(root, "run/clusterdebian/network.json"))
		return strings.Contains(string(data), `"address": "`+head+`"`)
	})
	// As any machine on the LAN: its address with the lease's lifetime,
	// its router and DNS server.
	addrs, err := exec.Command("ip", "-4", "addr", "show", "dev", "eth0").Output()
	if err != nil || !strings.Contains(string(addrs), head+"/23") || !strings.Contains(string(addrs), "dynamic") {
		t.Errorf("eth0's addresses (%v):\n%s", err, addrs)
	}
	if routes, _ := exec.Command("ip", "route", "show", "default").Output(); !strings.Contains(string(routes), "default via "+lanServerIP+" dev eth0") {
		t.Errorf("node1's default route:\n%s", routes)
	}
	if conf, _ := os.ReadFile(filepath.Join(root, "etc/resolv.conf")); !strings.Contains(string(conf), "nameserver "+lanServerIP+"\n") {
		t.Errorf("node1's resolv.conf:\n%s", conf)
	}
	// MPI, ssh and /etc/hosts follow the LAN.
	for rel, want := range map[string]string{
		"etc/openmpi/openmpi-mca-params.conf": "btl_tcp_if_include = " + lanNet + "\n",
		"etc/hosts":                           head + "\t" + wantPrefix + "1 ",
	} {
		waitFor(t, rel+" to follow the LAN", func() bool {
			data, _ := os.ReadFile(filepath.Join(root, rel))
			return strings.Contains(string(data), want)
		})
	}

	// A BIOS PXE ROM on the LAN: dnsmasq's offer with an address, and
	// node1's with none, pointing at node1's address on the LAN. Then
	// iPXE: its script's URL on node1's address.
	mac, _ := net.ParseMAC(pxeMAC)
	pxe := func(userClass bool) []dhcpv4.Modifier {
		m := []dhcpv4.Modifier{
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, bytes.Repeat([]byte{0x5a}, 16)...))),
			dhcpv4.WithBroadcast(true),
		}
		if userClass {
			m = append(m, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))))
		}
		return m
	}
	var lanOffer, proxyOffer, ipxeOffer *dhcpv4.DHCPv4
	var lease *nclient4.Lease
	err = (&netns.NS{Name: client}).Do(func() error {
		c, err := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		for _, uc := range []bool{false, true} {
			disc, err := dhcpv4.NewDiscovery(mac, pxe(uc)...)
			if err != nil {
				return err
			}
			from := func(server string) nclient4.Matcher {
				return nclient4.IsAll(nclient4.IsMessageType(dhcpv4.MessageTypeOffer), nclient4.IsCorrectServer(net.ParseIP(server)))
			}
			offer, err := c.SendAndRead(ctx, c.RemoteAddr(), disc, from(head))
			if err != nil {
				return fmt.Errorf("no offer from node1 (iPXE %v): %w", uc, err)
			}
			if uc {
				ipxeOffer = offer
				break
			}
			proxyOffer = offer
			if lanOffer, err = c.SendAndRead(ctx, c.RemoteAddr(), disc, from(lanServerIP)); err != nil {
				return fmt.Errorf("no offer from the LAN's server: %w", err)
			}
		}
		lease, err = c.RequestFromOffer(ctx, lanOffer, pxe(true)...)
		return err
	})
	must(t, err)
	if !proxyOffer.YourIPAddr.IsUnspecified() || proxyOffer.ServerIPAddr.String() != head || proxyOffer.BootFileName != "undionly.kpxe" {
		t.Errorf("node1's offer: your ip %v, next server %v, file %q; want none, %s, undionly.kpxe", proxyOffer.YourIPAddr, proxyOffer.ServerIPAddr, proxyOffer.BootFileName, head)
	}
	if want := "http://" + head + "/boot/" + pxeMAC + ".ipxe"; !ipxeOffer.YourIPAddr.IsUnspecified() || ipxeOffer.BootFileName != want {
		t.Errorf("node1's offer to iPXE: your ip %v, file %q; want none, %s", ipxeOffer.YourIPAddr, ipxeOffer.BootFileName, want)
	}
	ip, _ := netip.AddrFromSlice(lease.ACK.YourIPAddr.To4())
	if !lan.Contains(ip) {
		t.Fatalf("the LAN's server leased %v", ip)
	}
	// The node fetches its script from node1's LAN address, named by its
	// host number on the /23.
	_, err = inNS(client, "ip", "addr", "add", ip.String()+"/23", "dev", "eth0")
	must(t, err)
	script, err := inNS(client, "curl", "-sS", "-f", "--max-time", "30", "http://"+head+"/boot/"+pxeMAC+".ipxe")
	must(t, err)
	num := uint32(ip.As4()[2]-50)<<8 | uint32(ip.As4()[3])
	if want := "booting " + wantPrefix + strconv.Itoa(int(num)) + " (" + pxeMAC + ") from head " + head; !strings.Contains(script, want) {
		t.Errorf("script lacks %q:\n%s", want, script)
	}

	// node1 renews its lease (dnsmasq: two minutes, T1 about one).
	start := n.Lease.Start
	deadline := time.Now().Add(3 * time.Minute)
	for {
		n = getNetwork(t, h)
		if n.Lease != nil && n.Lease.Start.After(start) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lease from %v was not renewed: %+v", start, n.Lease)
		}
		time.Sleep(time.Second)
	}
	if n.Address != head || n.AddressSource != "lease" {
		t.Errorf("after the renewal: %+v", n)
	}
}

func TestHeadWithUplink(t *testing.T) {
	if os.Getenv(roomChildEnv) == "uplink" {
		uplinkChild(t, strings.Fields(os.Getenv(roomEnv)))
		return
	}
	needTools(t, "nft", "curl", "udhcpc")
	ctx, cancel := context.WithTimeout(context.Background(), 5*guard)
	defer cancel()
	nss := testsupport.Namespaces(t, ctx, "uh", "uc", "uu")
	head, client, up := nss[0], nss[1], nss[2]
	must(t, netns.AddVeth(ctx, head, "eth0", client, "eth0"))
	must(t, client.IP(ctx, "link", "set", "eth0", "address", nodeMAC))
	must(t, netns.AddVeth(ctx, head, "up0", up, "up0"))
	must(t, head.AddAddr(ctx, "up0", netip.MustParsePrefix("172.31.0.2/24")))
	must(t, head.IP(ctx, "route", "add", "default", "via", "172.31.0.1"))
	must(t, up.AddAddr(ctx, "up0", netip.MustParsePrefix("172.31.0.1/24")))

	// A server beyond node1: it tells each client where it came from.
	var l net.Listener
	must(t, up.Do(func() (err error) {
		l, err = net.Listen("tcp", "172.31.0.1:8080")
		return err
	}))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, "from "+host+"\n")
	}), ReadHeaderTimeout: guard}
	go srv.Serve(l)
	defer srv.Close()

	runRoomChild(t, ctx, head, "TestHeadWithUplink", "uplink", roomEnv+"="+client.Name+" "+up.Name)
}

// uplinkChild is TestHeadWithUplink inside the head's namespace.
func uplinkChild(t *testing.T, env []string) {
	client, up := env[0], env[1]
	// node1's resolver is systemd-resolved's stub; its upstream server is
	// what the nodes must get.
	h, sys, _, stop := startRoomHead(t, func(o *Options) {
		o.DHCP = dhcp.ModeServer
		for rel, content := range map[string]string{
			"etc/resolv.conf":                 "nameserver 127.0.0.53\noptions edns0\n",
			"run/systemd/resolve/resolv.conf": "nameserver 172.31.0.53\n",
		} {
			p := filepath.Join(o.ClusterRoot, rel)
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			must(t, os.WriteFile(p, []byte(content), 0o644))
		}
	})
	if h.Interface() != "eth0" || h.plan.nat.Out != "up0" {
		t.Fatalf("head on %s, NAT out of %q; want eth0, up0", h.Interface(), h.plan.nat.Out)
	}
	n := getNetwork(t, h)
	if n.NAT == nil || n.NAT.Out != "up0" || !strings.HasSuffix(n.Summary, "; nodes reach the outside through node1 (NAT out of up0)") {
		t.Errorf("GET /api/v1/network: %+v", n)
	}
	ruleset, err := exec.Command("nft", "list", "table", "ip", "clusterdebian").CombinedOutput()
	if err != nil || !strings.Contains(string(ruleset), `oifname "up0" ip saddr 10.99.0.0/24 masquerade`) {
		t.Errorf("the NAT table in node1's namespace (%v):\n%s", err, ruleset)
	}
	if fwd, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward = %q", fwd)
	}
	if !strings.Contains(strings.Join(sys.calls(), "\n"), "nat forward=true") {
		t.Errorf("the head did not ask the machine for NAT: %q", sys.calls())
	}

	// The node gets node1 as its router and node1's upstream DNS server.
	nd := &node{ns: client, dir: t.TempDir()}
	vars := nd.dhcp(t)
	if vars["router"] != nsHead || vars["dns"] != "172.31.0.53" {
		t.Errorf("udhcpc: router %q, dns %q; want %s and 172.31.0.53", vars["router"], vars["dns"], nsHead)
	}
	_, err = inNS(client, "ip", "addr", "add", vars["ip"]+"/24", "dev", "eth0")
	must(t, err)
	_, err = inNS(client, "ip", "route", "add", "default", "via", vars["router"])
	must(t, err)
	// Out through node1, seen from the outside as node1.
	out, err := inNS(client, "curl", "-sS", "-f", "--max-time", "30", "http://172.31.0.1:8080/")
	if err != nil || out != "from 172.31.0.2\n" {
		t.Errorf("a node's request to the uplink: %q, %v; want it to arrive from node1's uplink address", out, err)
	}
	// Nothing from the outside into the cluster, not even with a route: a
	// server on the node answers the node itself, and not the uplink side.
	var l net.Listener
	must(t, (&netns.NS{Name: client}).Do(func() (err error) {
		l, err = net.Listen("tcp", ":8081")
		return err
	}))
	nodeSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "node\n") }), ReadHeaderTimeout: guard}
	go nodeSrv.Serve(l)
	defer nodeSrv.Close()
	nodeURL := "http://" + vars["ip"] + ":8081/"
	if out, err := inNS(client, "curl", "-sS", "-f", "--max-time", "30", nodeURL); err != nil || out != "node\n" {
		t.Fatalf("the node's own server: %q, %v", out, err)
	}
	_, err = inNS(up, "ip", "route", "add", "10.99.0.0/24", "via", "172.31.0.2")
	must(t, err)
	if out, err := inNS(up, "curl", "-sS", "-f", "--max-time", "3", nodeURL); err == nil {
		t.Errorf("the uplink side reached a node through node1: %q", out)
	}
	// It is the forward chain that keeps it out: without its rules the
	// same request gets through.
	if out, err := exec.Command("nft", "flush", "chain", "ip", "clusterdebian", "forward").CombinedOutput(); err != nil {
		t.Fatalf("nft flush: %v: %s", err, out)
	}
	if out, err := inNS(up, "curl", "-sS", "-f", "--max-time", "30", nodeURL); err != nil || out != "node\n" {
		t.Errorf("without the forward rules the uplink side should get through: %q, %v", out, err)
	}

	// A stopped head leaves the rules: a restart does not cut the nodes
	// off.
	stop()
	if ruleset, err := exec.Command("nft", "list", "table", "ip", "clusterdebian").CombinedOutput(); err != nil || !strings.Contains(string(ruleset), "masquerade") {
		t.Errorf("the NAT table after the head stopped (%v):\n%s", err, ruleset)
	}
	if out, err := inNS(client, "curl", "-sS", "-f", "--max-time", "30", "http://172.31.0.1:8080/"); err != nil || out != "from 172.31.0.2\n" {
		t.Errorf("a node's request with the head stopped: %q, %v", out, err)
	}
}

// TestHeadMovesToLAN: the LAN's DHCP server appears only after the head
// started as a full DHCP server on the private default network (it was
// down, say, or the switch was plugged into the LAN later). The first
// client that takes that server's address gives it away; no node runs from
// node1 yet, so Run starts the head again on the LAN: a lease from that
// server, proxyDHCP there, and the .1 it had added gone.
//
//	cdt-mn…  br0 192.168.50.1/23, dnsmasq (started late)
//	   ├─ veth ─ cdt-mh…  eth0 (node1)
//	   └─ veth ─ cdt-mc…  eth0 (a client)
func TestHeadMovesToLAN(t *testing.T) {
	if os.Getenv(roomChildEnv) == "move" {
		moveChild(t, strings.Fields(os.Getenv(roomEnv)))
		return
	}
	needTools(t, "dnsmasq", "udhcpc")
	ctx, cancel := context.WithTimeout(context.Background(), 5*guard)
	defer cancel()
	lan, head, client := lanRoom(t, ctx, "mn", "mh", "mc")
	runRoomChild(t, ctx, head, "TestHeadMovesToLAN", "move", roomEnv+"="+lan.Name+" "+client.Name)
}

// moveChild is TestHeadMovesToLAN inside the head's namespace: the head
// runs through Run, which is what starts it again.
func moveChild(t *testing.T, env []string) {
	lan, client := env[0], env[1]
	dir, root, stateDir, sys := roomMachine(t)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() {
		ran <- Run(ctx, Options{Subnet: nsSubnet, DHCP: dhcp.ModeAuto, BootDir: filepath.Join(dir, "boot"), StateDir: stateDir,
			IPXEDir: t.TempDir(), ClusterRoot: root, System: sys, Logger: slog.New(slog.NewTextHandler(&testLog{t: t}, nil))})
	}()
	defer awaitEnd(t, cancel, ran, "Run")
	status := func() registry.Network {
		var n registry.Network
		data, _ := os.ReadFile(filepath.Join(root, "run/clusterdebian/network.json"))
		json.Unmarshal(data, &n)
		return n
	}
	waitFor(t, "the head to serve addresses on "+nsSubnet.String(), func() bool {
		n := status()
		return n.Mode == "server" && n.Address == nsHead
	})

	// The LAN's server comes; a client takes its address.
	logBuf := startLANServer(t, context.Background(), &netns.NS{Name: lan}, dir, "10m")
	vars := (&node{ns: client, dir: t.TempDir()}).dhcp(t)
	if vars["serverid"] != lanServerIP {
		t.Errorf("the client took %q's offer (%s), want the LAN's server's", vars["serverid"], vars["ip"])
	}

	// The head moves to the LAN.
	var n registry.Network
	waitFor(t, "the head to move to "+lanNet, func() bool {
		n = status()
		return n.Subnet == lanNet && n.AddressSource == "lease"
	})
	if n.Mode != "proxy" || n.Lease == nil || n.Lease.Server != lanServerIP {
		t.Errorf("after the move: %+v", n)
	}
	addrs, _ := exec.Command("ip", "-4", "addr", "show", "dev", "eth0").Output()
	if strings.Contains(string(addrs), nsHead+"/24") || !strings.Contains(string(addrs), n.Address+"/23") {
		t.Errorf("eth0 after the move, want the lease and not %s:\n%s", nsHead, addrs)
	}
	// The moved head answers at its new address.
	waitFor(t, "the head's API at "+n.Address, func() bool {
		got, err := registry.NewClient("http://"+n.Address, "", nil).Network(context.Background())
		return err == nil && got.Address == n.Address
	})
	if !strings.Contains(logBuf.String(), " "+headMAC+" node1\n") {
		t.Error("dnsmasq did not lease node1 an address")
	}
}
