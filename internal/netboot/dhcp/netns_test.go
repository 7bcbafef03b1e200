package dhcp

// Integration tests against real protocol peers (busybox udhcpc, dnsmasq,
// nclient4) in network namespaces the test creates and removes itself. All
// traffic stays on a bridge inside those namespaces; no interface of the
// machine is touched.
//
// Topology per test (names prefixed cdt-dhcp-<random>-):
//
//	sw:      bridge br0 with ports ph, pc, pf, and any added host's
//	head:    eth0 10.99.0.1/24 (our server)          <-> ph
//	client:  eth0 no address, MAC 02:cd:00:00:00:10   <-> pc
//	foreign: eth0 10.55.0.1/23 (dnsmasq), optional    <-> pf
//
// The foreign server serves a subnet of its own, wider than /24, as the
// DHCP server of an office LAN does: a test whose foreign server served the
// head's own subnet would prove nothing about such a LAN.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"
)

const (
	clientMAC  = "02:cd:00:00:00:10"
	foreignIP  = "10.55.0.1"
	foreignNet = "10.55.0.0/23"
	cmdTimeout = 30 * time.Second // failure guard for any one command
)

type netnsEnv struct {
	t       testing.TB
	dir     string
	prefix  string
	sw      string
	head    string
	client  string
	foreign string
	udhcpc  []string
	ports   int
}

// requireNetns skips unless the test can build namespaces and run udhcpc.
func requireNetns(t testing.TB) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("namespace integration test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("namespace integration test needs root (network namespaces, raw sockets)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("namespace integration test needs iproute2's ip")
	}
	if p, err := exec.LookPath("udhcpc"); err == nil {
		return []string{p}
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		if out, _ := exec.Command(p, "--list").Output(); bytes.Contains(out, []byte("udhcpc\n")) {
			return []string{p, "udhcpc"}
		}
	}
	t.Skip("namespace integration test needs udhcpc (Debian: busybox-static or udhcpc)")
	return nil
}

func newNetnsEnv(t testing.TB, withForeign bool) *netnsEnv {
	udhcpc := requireNetns(t)
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	prefix := "cdt-dhcp-" + hex.EncodeToString(rb[:]) + "-"
	e := &netnsEnv{t: t, dir: t.TempDir(), prefix: prefix, sw: prefix + "sw", head: prefix + "head", client: prefix + "cl", udhcpc: udhcpc}
	if withForeign {
		e.foreign = prefix + "fg"
	}
	for _, ns := range []string{e.sw, e.head, e.client, e.foreign} {
		if ns != "" {
			e.addNS(ns)
		}
	}
	// No STP and no forwarding delay: ports pass traffic at once.
	e.ip("-n", e.sw, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
	e.ip("-n", e.sw, "link", "set", "br0", "up")
	e.attach("ph", e.head, "", "10.99.0.1/24")
	e.attach("pc", e.client, clientMAC, "")
	if withForeign {
		e.attach("pf", e.foreign, "", foreignIP+"/23")
	}
	return e
}

// addNS creates namespace ns, deleted when the test ends.
func (e *netnsEnv) addNS(ns string) {
	e.ip("netns", "add", ns)
	// Deleting the namespace also destroys the veth ends and bridge in it.
	e.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			e.t.Errorf("cleanup: ip netns del %s: %v %s", ns, err, out)
		}
	})
}

// addHost adds another machine on the bridge: a namespace whose eth0 has
// MAC mac (random if empty) and address addr (none if empty). It returns
// the namespace's name.
func (e *netnsEnv) addHost(name, mac, addr string) string {
	e.ports++
	ns := e.prefix + name
	e.addNS(ns)
	e.attach(fmt.Sprintf("px%d", e.ports), ns, mac, addr)
	return ns
}

// attach links namespace ns to the bridge through a veth pair whose ns end
// is called eth0.
func (e *netnsEnv) attach(port, ns, mac, addr string) {
	e.ip("-n", e.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	e.ip("-n", e.sw, "link", "set", port, "master", "br0")
	e.ip("-n", e.sw, "link", "set", port, "up")
	e.ip("-n", ns, "link", "set", "lo", "up")
	if mac != "" {
		e.ip("-n", ns, "link", "set", "eth0", "address", mac)
	}
	e.ip("-n", ns, "link", "set", "eth0", "up")
	if addr != "" {
		e.ip("-n", ns, "addr", "add", addr, "dev", "eth0")
	}
}

func (e *netnsEnv) ip(args ...string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		e.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs fn on a fresh OS thread moved into namespace ns. Sockets fn
// opens belong to ns for their whole life, whichever thread uses them later.
// withNClient runs fn in namespace ns with a DHCP client on its eth0
// (two-second reads, three tries) and a context bounded by cmdTimeout.
func withNClient(ns string, fn func(ctx context.Context, c *nclient4.Client) error) error {
	return inNetns(ns, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		c, err := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(ctx, c)
	})
}

func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is in another namespace, so the
		// runtime must throw it away when this goroutine ends.
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// eventLog records OnEvent calls.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) record(mac net.HardwareAddr, ip netip.Addr, stage, detail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf("%s %s %s %s", mac, ip, stage, detail))
}

func (l *eventLog) matching(sub string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if strings.Contains(e, sub) {
			out = append(out, e)
		}
	}
	return out
}

func (e *netnsEnv) config(mode Mode, events *eventLog) Config {
	cfg := Config{
		Interface:     "eth0",
		ServerIP:      testServerIP,
		Subnet:        testSubnet,
		Mode:          mode,
		Router:        testRouter,
		DNS:           []netip.Addr{testDNS},
		Domain:        "cluster",
		LeaseFile:     filepath.Join(e.dir, "leases.json"),
		LeaseTime:     time.Hour,
		HTTPBase:      "http://10.99.0.1",
		ProbeInterval: time.Second,
		ProbeTimeout:  time.Second,
		Logger:        testLogger(e.t),
	}
	if events != nil {
		cfg.OnEvent = events.record
	}
	return cfg
}

// startServer runs a Server in the head namespace until the returned stop
// function (also registered as cleanup) is called.
func (e *netnsEnv) startServer(cfg Config) (*Server, func()) {
	e.t.Helper()
	s, err := New(cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inNetns(e.head, func() error { return s.Serve(ctx) }) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Serve: %v", err)
				}
			case <-time.After(cmdTimeout):
				e.t.Errorf("Serve did not return after cancel")
			}
		})
	}
	e.t.Cleanup(stop)
	e.waitUDPPort(e.head, 67, done)
	return s, stop
}

// waitUDPPort waits until something listens on UDP port in namespace ns
// (read from the namespace's /proc/net/udp). failed, if not nil, ends the
// wait early when the server gives up.
func (e *netnsEnv) waitUDPPort(ns string, port int, failed <-chan error) {
	e.t.Helper()
	want := fmt.Sprintf(":%04X ", port)
	deadline := time.Now().Add(cmdTimeout)
	for time.Now().Before(deadline) {
		out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/udp").Output()
		if err == nil {
			for _, line := range strings.Split(string(out), "\n")[1:] {
				if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[1]+" ", want) {
					return
				}
			}
		}
		select {
		case err := <-failed:
			e.t.Fatalf("server exited before listening: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	e.t.Fatalf("nothing listens on UDP %d in %s", port, ns)
}

// runUDHCPC runs busybox udhcpc once in the client namespace and returns the
// variables it passed to its script for the "bound" event.
func (e *netnsEnv) runUDHCPC(tries int, extra ...string) (map[string]string, error) {
	e.t.Helper()
	return e.runUDHCPCIn(e.client, tries, extra...)
}

// runUDHCPCIn runs udhcpc as runUDHCPC does, in namespace ns.
func (e *netnsEnv) runUDHCPCIn(ns string, tries int, extra ...string) (map[string]string, error) {
	e.t.Helper()
	out := filepath.Join(e.dir, fmt.Sprintf("udhcpc-%d.env", time.Now().UnixNano()))
	script := filepath.Join(e.dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncase \"$1\" in bound|renew) env > \"$UDHCPC_OUT\" ;; esac\nexit 0\n"), 0o755); err != nil {
		e.t.Fatal(err)
	}
	// -f foreground, -q quit once bound, -n give up if no lease; the script
	// leaves the interface unconfigured so every run starts from DISCOVER.
	args := append([]string{"netns", "exec", ns}, e.udhcpc...)
	args = append(args, "-i", "eth0", "-f", "-q", "-n", "-t", fmt.Sprint(tries), "-T", "1", "-s", script)
	args = append(args, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = append(os.Environ(), "UDHCPC_OUT="+out)
	log, err := cmd.CombinedOutput()
	e.t.Logf("udhcpc %s:\n%s", strings.Join(extra, " "), log)
	if err != nil {
		return nil, fmt.Errorf("udhcpc: %w", err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("udhcpc exited 0 but did not run its script: %w", err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	return vars, nil
}

// startDnsmasq runs dnsmasq in the foreign namespace as a second DHCP server
// with its own range (and extra options), confined to that namespace and
// temp dir.
func (e *netnsEnv) startDnsmasq(dhcpRange string, extra ...string) (stop func()) {
	e.t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		e.t.Skip("needs dnsmasq")
	}
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	args := append([]string{"netns", "exec", e.foreign, bin,
		"--no-daemon", "--conf-file=/dev/null", "--interface=eth0", "--bind-interfaces",
		"--port=0", "--no-hosts", "--no-resolv", "--no-ping", "--dhcp-authoritative",
		"--dhcp-range=" + dhcpRange,
		"--dhcp-leasefile=" + filepath.Join(e.dir, "dnsmasq.leases"),
		"--pid-file=" + filepath.Join(e.dir, "dnsmasq.pid"),
		"--user=root", "--group=root", "--log-facility=-", "--log-dhcp"}, extra...)
	cmd := exec.Command("ip", args...)
	w := writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logBuf.Write(p) })
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start dnsmasq: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			// ip netns exec execs dnsmasq in place, so this pid is dnsmasq.
			_ = cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(cmdTimeout):
				e.t.Errorf("dnsmasq did not exit")
			}
			logMu.Lock()
			e.t.Logf("dnsmasq log:\n%s", logBuf.String())
			logMu.Unlock()
		})
	}
	e.t.Cleanup(stop)
	e.waitUDPPort(e.foreign, 67, exited)
	return stop
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(cmdTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func checkOurLease(t *testing.T, vars map[string]string) netip.Addr {
	t.Helper()
	ip, err := netip.ParseAddr(vars["ip"])
	if err != nil {
		t.Fatalf("udhcpc reported no address: %v", vars)
	}
	if !testSubnet.Contains(ip) || ip == testServerIP || ip == testRouter || ip.As4()[3] < 2 || ip.As4()[3] > 254 {
		t.Errorf("address %v outside the pool", ip)
	}
	want := map[string]string{
		"subnet":   "255.255.255.0",
		"router":   testRouter.String(),
		"dns":      testDNS.String(),
		"hostname": fmt.Sprintf("node%d", ip.As4()[3]),
		"domain":   "cluster",
		"serverid": testServerIP.String(),
		"lease":    "3600",
	}
	for k, v := range want {
		if got := strings.TrimSpace(vars[k]); got != v {
			t.Errorf("udhcpc %s = %q, want %q", k, got, v)
		}
	}
	return ip
}

// TestNetnsServer: udhcpc gets a lease with all options; a PXE-looking
// udhcpc gets the boot file; after a restart the MAC keeps its address.
func TestNetnsServer(t *testing.T) {
	e := newNetnsEnv(t, false)
	events := &eventLog{}
	cfg := e.config(ModeServer, events)
	s, stop := e.startServer(cfg)

	vars, err := e.runUDHCPC(5)
	if err != nil {
		t.Fatal(err)
	}
	ip := checkOurLease(t, vars)
	if vars["boot_file"] != "" {
		t.Errorf("plain client got boot file %q", vars["boot_file"])
	}
	if got := events.matching(clientMAC + " " + ip.String() + " " + StageDHCPAcked); len(got) != 1 {
		t.Errorf("events %v, want one ack for %s", events.matching(""), clientMAC)
	}

	// The same machine as a BIOS PXE ROM: boot file in header and options.
	vars, err = e.runUDHCPC(5, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-O", "66", "-O", "67")
	if err != nil {
		t.Fatal(err)
	}
	if vars["ip"] != ip.String() || vars["boot_file"] != "undionly.kpxe" || vars["siaddr"] != "10.99.0.1" {
		t.Errorf("PXE client: ip %q boot_file %q siaddr %q; want %v undionly.kpxe 10.99.0.1", vars["ip"], vars["boot_file"], vars["siaddr"], ip)
	}
	// And as iPXE: the per-MAC script URL.
	vars, err = e.runUDHCPC(5, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-x", "0x4d:69505845")
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://10.99.0.1/boot/" + clientMAC + ".ipxe"; vars["boot_file"] != want {
		t.Errorf("iPXE boot_file %q, want %q", vars["boot_file"], want)
	}

	// Our own server is not "another DHCP server" to Probe.
	var found bool
	var srv netip.Addr
	if err := inNetns(e.head, func() (err error) {
		found, srv, err = Probe(context.Background(), "eth0", 2*time.Second)
		return err
	}); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if found {
		t.Errorf("Probe found a foreign server %v where only ours runs", srv)
	}

	stop()
	s2, _ := e.startServer(cfg)
	vars, err = e.runUDHCPC(5)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkOurLease(t, vars); got != ip {
		t.Errorf("after restart the client got %v, had %v", got, ip)
	}
	found = false
	for _, l := range s2.Leases() {
		found = found || (l.MAC == clientMAC && l.IP == ip && l.Hostname == fmt.Sprintf("node%d", ip.As4()[3]))
	}
	if !found {
		t.Errorf("restarted server's leases %+v lack %s -> %v", s2.Leases(), clientMAC, ip)
	}
	_ = s
}

// TestNetnsBurst: 20 simulated machines at once all get distinct addresses.
func TestNetnsBurst(t *testing.T) {
	e := newNetnsEnv(t, false)
	s, _ := e.startServer(e.config(ModeServer, nil))
	var res BurstResult
	err := inNetns(e.client, func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		res, err = Burst(ctx, "eth0", 20)
		return err
	})
	if err != nil {
		t.Fatalf("Burst: %v", err)
	}
	t.Logf("burst of 20: %v, %d leases, %d errors", res.Elapsed, len(res.Leases), len(res.Errors))
	for _, err := range res.Errors {
		t.Errorf("client failed: %v", err)
	}
	if len(res.Leases) != 20 || !res.Distinct() {
		t.Errorf("got %d leases, distinct=%v: %+v", len(res.Leases), res.Distinct(), res.Leases)
	}
	for _, l := range res.Leases {
		if !testSubnet.Contains(l.IP) || l.IP == testServerIP || l.Server != testServerIP {
			t.Errorf("lease %+v", l)
		}
	}
	// Burst releases what it got: the server ends the leases but keeps the
	// MAC->IP bindings.
	waitFor(t, "20 released leases", func() bool {
		ls := s.Leases()
		for _, l := range ls {
			if l.Expires.After(time.Now()) {
				return false
			}
		}
		return len(ls) == 20
	})
}

// TestNetnsBurstChecked: 100 machines booting at once, every address new
// and checked by ARP before it is offered: the checks run side by side, so
// the burst still completes at once and every machine gets its own address.
// The elapsed times, with and without the check, are logged for
// information (no assertion on time).
func TestNetnsBurstChecked(t *testing.T) {
	const n = 100
	for _, check := range []time.Duration{0, -1} {
		e := newNetnsEnv(t, false)
		cfg := e.config(ModeServer, nil)
		cfg.AddressCheck = check
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		e.startServer(cfg)
		var res BurstResult
		err := inNetns(e.client, func() (err error) {
			ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
			defer cancel()
			res, err = Burst(ctx, "eth0", n)
			return err
		})
		if err != nil {
			t.Fatalf("Burst: %v", err)
		}
		what := "ARP check on"
		if check < 0 {
			what = "ARP check off"
		}
		t.Logf("burst of %d, %s: %v, %d leases, %d errors", n, what, res.Elapsed, len(res.Leases), len(res.Errors))
		for _, err := range res.Errors {
			t.Errorf("client failed: %v", err)
		}
		if len(res.Leases) != n || !res.Distinct() {
			t.Errorf("%s: %d leases, distinct=%v", what, len(res.Leases), res.Distinct())
		}
	}
}

// TestNetnsForeignServer: a plain dnsmasq serves its own /23 on the
// segment. Probe finds it; auto mode turns proxy (evidence: it answered the
// probe) and leaves the addresses to dnsmasq while still giving PXE clients
// their boot file (offer on 67, ACK on 4011); once dnsmasq is gone it stays
// a proxy: it hands out no address on this segment for the rest of its life.
func TestNetnsForeignServer(t *testing.T) {
	e := newNetnsEnv(t, true)
	stopDnsmasq := e.startDnsmasq("10.55.0.100,10.55.1.200,255.255.254.0,1h")

	var found bool
	var srv netip.Addr
	if err := inNetns(e.head, func() (err error) {
		found, srv, err = Probe(context.Background(), "eth0", 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if !found || srv.String() != foreignIP {
		t.Fatalf("Probe = %v %v, want dnsmasq at %s", found, srv, foreignIP)
	}

	events := &eventLog{}
	s, _ := e.startServer(e.config(ModeAuto, events))
	waitFor(t, "the first probe", func() bool { return s.probes.Load() >= 1 })
	if m := s.Mode(); m != ModeProxy {
		t.Fatalf("auto mode with dnsmasq present resolved to %q, want proxy", m)
	}
	if ev := s.Evidence(); len(ev) != 1 || ev[0].Server.String() != foreignIP || ev[0].Kind != EvidenceProbe {
		t.Errorf("Evidence() = %+v, want dnsmasq answering the probe", ev)
	}

	vars, err := e.runUDHCPC(5)
	if err != nil {
		t.Fatal(err)
	}
	ip, _ := netip.ParseAddr(vars["ip"])
	if vars["serverid"] != foreignIP || !netip.MustParsePrefix(foreignNet).Contains(ip) {
		t.Errorf("udhcpc lease %q from %q, want one from dnsmasq's range", vars["ip"], vars["serverid"])
	}
	if len(s.Leases()) != 0 || len(events.matching(clientMAC)) != 0 {
		t.Errorf("proxy handed out leases %v / events %v", s.Leases(), events.matching(""))
	}

	// A BIOS PXE ROM: DHCP offer from dnsmasq, ProxyDHCP offer from us.
	mac := mustMAC(clientMAC)
	guid := append([]byte{0}, bytes.Repeat([]byte{0x5a}, 16)...)
	pxe := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid)),
		dhcpv4.WithBroadcast(true),
	}
	var proxyOffer *dhcpv4.DHCPv4
	var dnsmasqLease *nclient4.Lease
	err = withNClient(e.client, func(ctx context.Context, c *nclient4.Client) error {
		disc, err := dhcpv4.NewDiscovery(mac, pxe...)
		if err != nil {
			return err
		}
		// Both servers answer the same DISCOVER; pick each one's OFFER.
		proxyOffer, err = c.SendAndRead(ctx, c.RemoteAddr(), disc, nclient4.IsAll(
			nclient4.IsMessageType(dhcpv4.MessageTypeOffer), nclient4.IsCorrectServer(testServerIP.AsSlice())))
		if err != nil {
			return fmt.Errorf("no ProxyDHCP offer: %w", err)
		}
		offer, err := c.SendAndRead(ctx, c.RemoteAddr(), disc, nclient4.IsAll(
			nclient4.IsMessageType(dhcpv4.MessageTypeOffer), nclient4.IsCorrectServer(net.ParseIP(foreignIP))))
		if err != nil {
			return fmt.Errorf("no dnsmasq offer: %w", err)
		}
		dnsmasqLease, err = c.RequestFromOffer(ctx, offer, pxe...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	checkProxyReply(t, proxyOffer, dhcpv4.MessageTypeOffer, guid)

	// The ROM now has dnsmasq's address and asks us on port 4011. Our
	// address is on another subnet of the same link here (serving the LAN's
	// own subnet is the head's business, not this package's): on-link
	// routes both ways let the exchange cross.
	clientIP := toAddr(dnsmasqLease.ACK.YourIPAddr)
	e.ip("-n", e.client, "addr", "add", clientIP.String()+"/23", "dev", "eth0")
	e.ip("-n", e.client, "route", "add", testSubnet.String(), "dev", "eth0")
	e.ip("-n", e.head, "route", "add", foreignNet, "dev", "eth0")
	var ack *dhcpv4.DHCPv4
	err = inNetns(e.client, func() (err error) {
		ack, err = pxeRequest4011(mac, clientIP, guid)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	checkProxyReply(t, ack, dhcpv4.MessageTypeAck, guid)
	if len(s.Leases()) != 0 {
		t.Errorf("proxy recorded leases: %v", s.Leases())
	}
	e.ip("-n", e.client, "addr", "flush", "dev", "eth0")

	// dnsmasq leaves; we stay a proxy and probe no more.
	stopDnsmasq()
	probes := s.probes.Load()
	if _, err := e.runUDHCPC(3); err == nil {
		t.Errorf("udhcpc got a lease after dnsmasq left: auto mode did not stay proxy")
	}
	if s.Mode() != ModeProxy || s.probes.Load() != probes || len(s.Leases()) != 0 {
		t.Errorf("after dnsmasq left: mode %s, %d more probes, leases %v", s.Mode(), s.probes.Load()-probes, s.Leases())
	}
}

// knownMAC is the one machine the known-only dnsmasq answers.
const knownMAC = "52:54:00:ee:00:01"

// startKnownOnly starts dnsmasq as a LAN server that answers only the
// machines it knows: knownMAC gets 10.55.0.120, others nothing.
func (e *netnsEnv) startKnownOnly() func() {
	return e.startDnsmasq("10.55.0.100,10.55.1.200,255.255.254.0,1h",
		"--dhcp-host="+knownMAC+",10.55.0.120", "--dhcp-ignore=tag:!known")
}

// startAutoAsServer starts auto mode and waits until its first probe made
// it a server: the known-only dnsmasq does not answer the head's probe.
func (e *netnsEnv) startAutoAsServer(events *eventLog) *Server {
	e.t.Helper()
	cfg := e.config(ModeAuto, events)
	// Generous, so that a slow test machine does not let our OFFER out
	// before dnsmasq's; the default is 1s.
	cfg.OfferDelay = 3 * time.Second
	s, _ := e.startServer(cfg)
	waitFor(e.t, "the first probe", func() bool { return s.probes.Load() >= 1 })
	if m, ev := s.Mode(), s.Evidence(); m != ModeServer || ev != nil {
		e.t.Fatalf("auto mode beside a known-only server: mode %s, evidence %+v; want server (the probe cannot see it)", m, ev)
	}
	return s
}

// checkStuckProxy checks that the server saw dnsmasq as kind, withdrew the
// OFFER it held for the known machine, handed out nothing, and stays a
// proxy that gives an unknown machine no address either.
func (e *netnsEnv) checkStuckProxy(s *Server, events *eventLog, kind EvidenceKind) {
	t := e.t
	t.Helper()
	// The evidence usually arrives while our OFFER for the machine is
	// held, which is then withdrawn; on a loaded host the watcher may see
	// it before the server socket reads the machine's DISCOVER, which is
	// then answered in proxy mode. Either way no OFFER goes out (below).
	waitFor(t, "the switch to proxy mode", func() bool { return s.Mode() == ModeProxy })
	t.Logf("held OFFERs withdrawn: %d", s.withdrawn.Load())
	ev := s.Evidence()
	if len(ev) != 1 || ev[0].Server.String() != foreignIP || ev[0].Kind != kind || ev[0].Client != knownMAC {
		t.Errorf("Evidence() = %+v, want %s from %s about %s", ev, kind, foreignIP, knownMAC)
	}
	if s.Mode() != ModeProxy {
		t.Errorf("mode %s after another server answered, want proxy", s.Mode())
	}
	if got := events.matching(StageDHCPOffered); len(got) != 0 || len(s.Leases()) != 0 {
		t.Errorf("sent offers %v / leases %v; the known machine must get dnsmasq's offer only", got, s.Leases())
	}
	// An unknown machine: dnsmasq ignores it, and so do we now.
	if _, err := e.runUDHCPC(2); err == nil {
		t.Errorf("an unknown machine got an address on a segment with another DHCP server")
	}
}

// TestNetnsKnownOnlyServer: the LAN's server answers only known machines,
// so the probe cannot find it. The known machine asks for broadcast replies
// (as PXE ROMs do): dnsmasq's OFFER crosses the segment, auto mode sees it
// while holding its own OFFER, never sends that, and becomes a proxy for
// good. The machine stops at the OFFER, so that the OFFER is the only
// packet naming dnsmasq: its REQUEST would be evidence too, and reaches
// the server socket, not the watcher, so on a loaded host either can be
// read first (TestNetnsKnownOnlyServerUnicast tries the REQUEST).
func TestNetnsKnownOnlyServer(t *testing.T) {
	e := newNetnsEnv(t, true)
	e.startKnownOnly()
	known := e.addHost("kn", knownMAC, "")
	events := &eventLog{}
	s := e.startAutoAsServer(events)

	var offer *dhcpv4.DHCPv4
	err := withNClient(known, func(ctx context.Context, c *nclient4.Client) error {
		var err error
		offer, err = c.DiscoverOffer(ctx, dhcpv4.WithBroadcast(true))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if offer.YourIPAddr.String() != "10.55.0.120" || offer.ServerIdentifier().String() != foreignIP {
		t.Errorf("known machine was offered %v by %v, want 10.55.0.120 from dnsmasq", offer.YourIPAddr, offer.ServerIdentifier())
	}
	e.checkStuckProxy(s, events, EvidenceOffer)
}

// TestNetnsKnownOnlyServerUnicast: the same, but the known machine (udhcpc)
// does not ask for broadcast replies, so dnsmasq's OFFER goes to it alone
// and auto mode cannot see it. The machine's broadcast REQUEST naming
// dnsmasq gives it away while our OFFER is still held.
func TestNetnsKnownOnlyServerUnicast(t *testing.T) {
	e := newNetnsEnv(t, true)
	e.startKnownOnly()
	known := e.addHost("kn", knownMAC, "")
	events := &eventLog{}
	s := e.startAutoAsServer(events)

	vars, err := e.runUDHCPCIn(known, 5)
	if err != nil {
		t.Fatal(err)
	}
	if vars["ip"] != "10.55.0.120" || vars["serverid"] != foreignIP {
		t.Errorf("known machine got %q from %q, want 10.55.0.120 from dnsmasq", vars["ip"], vars["serverid"])
	}
	e.checkStuckProxy(s, events, EvidenceRequest)
}

// TestNetnsAutoAlone: with no other server on the segment auto mode serves,
// its OFFERs a little late, and sees no evidence.
func TestNetnsAutoAlone(t *testing.T) {
	e := newNetnsEnv(t, false)
	s, _ := e.startServer(e.config(ModeAuto, nil))
	waitFor(t, "the first probe", func() bool { return s.probes.Load() >= 1 })
	if s.Mode() != ModeServer {
		t.Fatalf("auto mode alone resolved to %s", s.Mode())
	}
	vars, err := e.runUDHCPC(5)
	if err != nil {
		t.Fatal(err)
	}
	checkOurLease(t, vars)
	// Our own replies, seen by the watcher, are no evidence.
	if ev := s.Evidence(); ev != nil || s.Mode() != ModeServer {
		t.Errorf("alone: evidence %+v, mode %s", ev, s.Mode())
	}
}

// TestNetnsAddressInUse: hosts with static addresses inside the pool, one
// of which ignores ping, and a running node whose lease the head forgot:
// server mode never offers an address a host answers ARP for, nor one the
// head's registry knows (Config.InUse), and offers the next free one.
func TestNetnsAddressInUse(t *testing.T) {
	e := newNetnsEnv(t, false)
	quiet := e.addHost("st2", "", "10.99.0.2/24")
	e.ip("netns", "exec", quiet, "sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1")
	e.addHost("st3", "", "10.99.0.3/24")
	// The quiet host does not answer ping (so a ping check would miss it).
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", e.head, "ping", "-c", "1", "-W", "1", "10.99.0.2").CombinedOutput(); err == nil {
		t.Fatalf("the static host answers ping; the test needs one that does not:\n%s", out)
	}

	cfg := e.config(ModeServer, nil)
	var mu sync.Mutex
	registry := map[netip.Addr]string{netip.MustParseAddr("10.99.0.5"): "52:54:00:00:00:05"}
	cfg.InUse = func(ip netip.Addr, mac net.HardwareAddr) bool {
		mu.Lock()
		defer mu.Unlock()
		owner, ok := registry[ip]
		return ok && owner != mac.String()
	}
	_, stop := e.startServer(cfg)
	vars, err := e.runUDHCPC(5)
	if err != nil {
		t.Fatal(err)
	}
	if ip := checkOurLease(t, vars); ip != netip.MustParseAddr("10.99.0.4") {
		t.Errorf("first client got %v, want 10.99.0.4 (.2 and .3 are static hosts)", ip)
	}
	// Another machine, asking for an address a static host holds.
	other := e.addHost("c2", "02:cd:00:00:00:20", "")
	vars, err = e.runUDHCPCIn(other, 5, "-r", "10.99.0.3")
	if err != nil {
		t.Fatal(err)
	}
	if ip := checkOurLease(t, vars); ip != netip.MustParseAddr("10.99.0.6") {
		t.Errorf("second client got %v, want 10.99.0.6 (.5 is a node the registry knows)", ip)
	}

	// The second client is now a running node at .6; node1 reboots and its
	// lease file is gone (a RAM-root node keeps its address meanwhile).
	e.ip("-n", other, "addr", "add", "10.99.0.6/24", "dev", "eth0")
	stop()
	if err := os.Remove(cfg.LeaseFile); err != nil {
		t.Fatal(err)
	}
	cfg.InUse = nil
	e.startServer(cfg)
	// Three machines come, the first client among them (it holds no
	// address): the third must skip the running node's .6.
	for _, m := range []struct{ ns, want string }{
		{e.addHost("c3", "02:cd:00:00:00:30", ""), "10.99.0.4"},
		{e.client, "10.99.0.5"},
		{e.addHost("c4", "02:cd:00:00:00:40", ""), "10.99.0.7"},
	} {
		vars, err = e.runUDHCPCIn(m.ns, 5)
		if err != nil {
			t.Fatal(err)
		}
		if ip := checkOurLease(t, vars); ip.String() != m.want {
			t.Errorf("after the lease file was lost: got %v, want %s (.2, .3 static, .6 a running node)", ip, m.want)
		}
	}
}

// TestNetnsDecline: a client that finds its address in use sends
// DHCPDECLINE; the address leaves the pool and the client gets another.
func TestNetnsDecline(t *testing.T) {
	e := newNetnsEnv(t, false)
	cfg := e.config(ModeServer, nil)
	cfg.AddressCheck = -1 // the client finds the conflict, not us
	s, _ := e.startServer(cfg)
	mac := mustMAC(clientMAC)
	var first, second *dhcpv4.DHCPv4
	err := withNClient(e.client, func(ctx context.Context, c *nclient4.Client) error {
		lease, err := c.Request(ctx, dhcpv4.WithBroadcast(true))
		if err != nil {
			return err
		}
		first = lease.ACK
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		raw, err := openClientConn(ifi)
		if err != nil {
			return err
		}
		defer raw.Close()
		dec, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(mac),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(first.YourIPAddr)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(first.ServerIdentifier())))
		if err != nil {
			return err
		}
		if _, err := raw.WriteTo(dec.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	declined := toAddr(first.YourIPAddr)
	waitFor(t, "the DECLINE", func() bool { return len(s.Leases()) == 0 })
	err = withNClient(e.client, func(ctx context.Context, c *nclient4.Client) error {
		lease, err := c.Request(ctx, dhcpv4.WithBroadcast(true))
		if err == nil {
			second = lease.ACK
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := toAddr(second.YourIPAddr); got == declined || !testSubnet.Contains(got) {
		t.Errorf("after declining %v the client got %v", declined, got)
	}
}

// rawExchange sends m from the client namespace on a raw client socket and
// returns the wire bytes of the first BOOTREPLY of type want for it.
func (e *netnsEnv) rawExchange(m *dhcpv4.DHCPv4, want dhcpv4.MessageType) []byte {
	e.t.Helper()
	var out []byte
	err := inNetns(e.client, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		pc, err := openClientConn(ifi)
		if err != nil {
			return err
		}
		defer pc.Close()
		if err := pc.SetDeadline(time.Now().Add(cmdTimeout)); err != nil {
			return err
		}
		if _, err := pc.WriteTo(m.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return err
			}
			r, err := dhcpv4.FromBytes(buf[:n])
			if err == nil && r.OpCode == dhcpv4.OpcodeBootReply && r.TransactionID == m.TransactionID && r.MessageType() == want {
				out = append([]byte(nil), buf[:n]...)
				return nil
			}
		}
	})
	if err != nil {
		e.t.Fatalf("%s: %v", m.MessageType(), err)
	}
	return out
}

// TestNetnsBootFileWire sends raw DISCOVERs and REQUESTs of BIOS and UEFI
// PXE ROMs and checks the bytes that come back: option 67 and the file
// field read as C strings give the boot file name, in server and proxy
// mode, with the default names and others.
func TestNetnsBootFileWire(t *testing.T) {
	mac := mustMAC(clientMAC)
	bios := pxeMods("PXEClient:Arch:00000:UNDI:002001", iana.INTEL_X86PC)
	uefi := pxeMods("PXEClient:Arch:00007:UNDI:003016", iana.EFI_X86_64)
	for _, files := range []BootFiles{{}, {BIOS: "pxe/ipxe-undi.kpxe", UEFI: "x"}} {
		e := newNetnsEnv(t, false)
		cfg := e.config(ModeServer, nil)
		cfg.BootFiles = files
		e.startServer(cfg)
		biosFile, uefiFile := files.BIOS, files.UEFI
		if biosFile == "" {
			biosFile, uefiFile = DefaultBIOSFile, DefaultUEFIFile
		}
		for _, c := range []struct {
			mods []dhcpv4.Modifier
			file string
		}{{bios, biosFile}, {uefi, uefiFile}} {
			d := discover(mac, append(c.mods, dhcpv4.WithBroadcast(true))...)
			b := e.rawExchange(d, dhcpv4.MessageTypeOffer)
			checkBootBytes(t, "server OFFER", b, c.file, true)
			offer, err := dhcpv4.FromBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			checkBootBytes(t, "server ACK", e.rawExchange(request(offer, append(c.mods, dhcpv4.WithBroadcast(true))...), dhcpv4.MessageTypeAck), c.file, true)
		}
	}

	// Proxy mode: the OFFER on port 67 and the ACK on port 4011.
	e := newNetnsEnv(t, false)
	e.startServer(e.config(ModeProxy, nil))
	checkBootBytes(t, "proxy OFFER", e.rawExchange(discover(mac, append(uefi, dhcpv4.WithBroadcast(true))...), dhcpv4.MessageTypeOffer), DefaultUEFIFile, true)
	e.ip("-n", e.client, "addr", "add", "10.99.0.120/24", "dev", "eth0")
	var raw []byte
	err := inNetns(e.client, func() error {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.99.0.120"), Port: dhcpv4.ClientPort})
		if err != nil {
			return err
		}
		defer conn.Close()
		req, _ := dhcpv4.New(append(bios, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac),
			dhcpv4.WithClientIP(net.ParseIP("10.99.0.120")))...)
		if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: testServerIP.AsSlice(), Port: pxePort}); err != nil {
			return err
		}
		if err := conn.SetReadDeadline(time.Now().Add(cmdTimeout)); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		n, _, err := conn.ReadFrom(buf)
		raw = buf[:n]
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	checkBootBytes(t, "4011 ACK", raw, DefaultBIOSFile, true)
}

// TestNetnsProxyMode: configured proxy mode answers PXE clients only, and
// never gives plain udhcpc a lease.
func TestNetnsProxyMode(t *testing.T) {
	e := newNetnsEnv(t, false)
	s, _ := e.startServer(e.config(ModeProxy, nil))
	if _, err := e.runUDHCPC(2); err == nil {
		t.Errorf("udhcpc got a lease from a proxy-only server")
	}
	mac := mustMAC(clientMAC)
	var offer *dhcpv4.DHCPv4
	err := withNClient(e.client, func(ctx context.Context, c *nclient4.Client) (err error) {
		offer, err = c.DiscoverOffer(ctx, dhcpv4.WithBroadcast(true),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !isZero(offer.YourIPAddr) || offer.ClassIdentifier() != "PXEClient" || offer.BootFileName != "shimx64.efi" ||
		!offer.ServerIPAddr.Equal(testServerIP.AsSlice()) ||
		!bytes.Equal(offer.Options.Get(dhcpv4.OptionVendorSpecificInformation), []byte{6, 1, 8, 255}) {
		t.Errorf("UEFI proxy offer: %v", offer.Summary())
	}
	clientIP := netip.MustParseAddr("10.99.0.120")
	e.ip("-n", e.client, "addr", "add", "10.99.0.120/24", "dev", "eth0")
	var ack *dhcpv4.DHCPv4
	if err := inNetns(e.client, func() (err error) { ack, err = pxeRequest4011(mac, clientIP, nil); return err }); err != nil {
		t.Fatal(err)
	}
	checkProxyReply(t, ack, dhcpv4.MessageTypeAck, nil)
	if len(s.Leases()) != 0 {
		t.Errorf("proxy recorded leases: %v", s.Leases())
	}
}

func checkProxyReply(t *testing.T, r *dhcpv4.DHCPv4, typ dhcpv4.MessageType, guid []byte) {
	t.Helper()
	if r.MessageType() != typ {
		t.Errorf("got %s, want %s", r.MessageType(), typ)
	}
	if !isZero(r.YourIPAddr) {
		t.Errorf("proxy %s carries yiaddr %v", typ, r.YourIPAddr)
	}
	if r.ClassIdentifier() != "PXEClient" {
		t.Errorf("option 60 %q", r.ClassIdentifier())
	}
	if !r.ServerIdentifier().Equal(testServerIP.AsSlice()) || !r.ServerIPAddr.Equal(testServerIP.AsSlice()) {
		t.Errorf("server id %v siaddr %v", r.ServerIdentifier(), r.ServerIPAddr)
	}
	if r.BootFileName != "undionly.kpxe" && r.BootFileName != "shimx64.efi" {
		t.Errorf("file %q", r.BootFileName)
	}
	if o43 := r.Options.Get(dhcpv4.OptionVendorSpecificInformation); len(o43) < 3 || !bytes.Equal(o43[:3], []byte{6, 1, 8}) {
		t.Errorf("option 43 % x lacks discovery control 8", o43)
	}
	if guid != nil && !bytes.Equal(r.Options.Get(dhcpv4.OptionClientMachineIdentifier), guid) {
		t.Errorf("option 97 not echoed")
	}
}

// pxeRequest4011 does what a PXE ROM does after a ProxyDHCP offer: unicast a
// REQUEST from its new address to the proxy's port 4011 and wait for the ACK.
func pxeRequest4011(mac net.HardwareAddr, clientIP netip.Addr, guid []byte) (*dhcpv4.DHCPv4, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: clientIP.AsSlice(), Port: dhcpv4.ClientPort})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(mac),
		dhcpv4.WithClientIP(clientIP.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
	}
	if guid != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid)))
	}
	req, err := dhcpv4.New(mods...)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	for try := 0; try < 5; try++ {
		if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: testServerIP.AsSlice(), Port: pxePort}); err != nil {
			return nil, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			n, _, err := conn.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return nil, err
			}
			if r, err := dhcpv4.FromBytes(buf[:n]); err == nil && r.TransactionID == req.TransactionID {
				return r, nil
			}
		}
	}
	return nil, errors.New("no answer on port 4011")
}

// BenchmarkBurst compares this server with dnsmasq on bursts of 20 machines
// booting at once (one op = one burst of 20 DORA exchanges):
//
//	go test -run '^$' -bench Burst ./internal/netboot/dhcp/
func BenchmarkBurst(b *testing.B) {
	const n = 20
	run := func(b *testing.B, e *netnsEnv) {
		var total time.Duration
		b.ResetTimer()
		for b.Loop() {
			var res BurstResult
			err := inNetns(e.client, func() (err error) {
				ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
				defer cancel()
				res, err = Burst(ctx, "eth0", n)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			if len(res.Leases) != n || !res.Distinct() {
				b.Fatalf("%d/%d leases, distinct=%v, errors %v", len(res.Leases), n, res.Distinct(), res.Errors)
			}
			total += res.Elapsed
		}
		// ns/op includes opening 20 raw sockets; this is the exchange alone.
		b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "burst-ms/op")
	}
	b.Run("clusterdebian", func(b *testing.B) {
		e := newNetnsEnv(b, false)
		cfg := e.config(ModeServer, nil)
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		e.startServer(cfg)
		run(b, e)
	})
	b.Run("dnsmasq", func(b *testing.B) {
		e := newNetnsEnv(b, true)
		e.startDnsmasq("10.55.0.2,10.55.1.250,255.255.254.0,1h")
		run(b, e)
	})
}
