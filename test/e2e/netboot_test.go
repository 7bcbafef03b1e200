//go:build e2e

package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/tether"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// The netboot tests boot a diskless VM from a real `clusterdebian head`, all
// inside network namespaces the test makes: namespace "head" holds a bridge
// br0, the VM's tap on it and the head daemon; the proxy tests add a second
// namespace with dnsmasq as the LAN's own DHCP server, joined to br0 by a
// veth. That LAN is not the head's default network: dnsmasq serves
// 192.168.50.0/23 with a router that is not node1, as an office LAN would,
// and the head must take an address there itself. No interface of this
// machine is touched and no packet leaves it.
//
// The VM boots the image's real kernel with a tiny initrd made here, whose
// /init prints a marker and the kernel command line on the serial console
// and powers off, so a boot takes well under a minute even under TCG.

const (
	netbootSubnet = clusterSubnet
	netbootHead   = clusterHead
	// The LAN of the proxy tests: dnsmasq's network, server and range.
	lanSubnet     = "192.168.50.0/23"
	lanDHCPServer = "192.168.50.2"
	lanRouter     = "192.168.50.1"
	lanFirst      = "192.168.50.100"
	lanLast       = "192.168.51.200"
	netbootMarker = "CLUSTERDEBIAN-NETBOOT-OK"
	// netbootTimeout guards against hangs only; a boot takes far less.
	netbootTimeout = 8 * time.Minute
)

func TestNetbootBIOS(t *testing.T) {
	needE2E(t)
	t.Parallel()
	e := newNetbootEnv(t)
	e.startHead(t, "server")
	e.boot(t, vm.BIOS)
	e.checkStages(t)
	e.checkLease(t, true)
}

// TestNetbootUEFI boots a UEFI machine whose NIC runs iPXE from its option
// ROM, QEMU's efi-virtio.rom. Only older iPXE ROMs (Debian 12's ipxe-qemu
// 1.0.0) add a boot option of their own; from ipxe-qemu 1.21 (Debian 13) the
// ROM only drives the NIC, and OVMF's own PXE client boots on top of it, by
// shim and GRUB. On such a host no firmware here starts iPXE from a ROM, and
// the test says so after the boot instead of passing: TestNetbootUEFIHTTP
// boots iPXE under UEFI on every host.
func TestNetbootUEFI(t *testing.T) {
	needE2E(t)
	t.Parallel()
	e := newNetbootEnv(t)
	e.startHead(t, "server")
	e.boot(t, vm.UEFI)
	if !e.headLogHas(t, regexp.MustCompile(`msg="node runs iPXE from its network card's boot ROM" mac=`+e.mac)) &&
		e.headLogHas(t, regexp.MustCompile(`msg="dhcp reply".* mac=`+e.mac+` .*boot="`+regexp.QuoteMeta(contract.UEFIPXEBootFile)+` \(uefi-tftp\)"`)) {
		e.loader = bootstage.GRUBLoaded
		e.checkStages(t)
		t.Skipf("this host's iPXE ROM (%s) adds no UEFI boot option of its own: OVMF's PXE client booted the VM by shim and GRUB, which TestNetbootUEFIChainload covers; TestNetbootUEFIHTTP boots iPXE under UEFI", efiROM())
	}
	e.checkStages(t)
	e.checkLease(t, true)
	// The NIC's boot ROM is iPXE built as a UEFI driver; its DHCP request
	// must say it came from x86-64 UEFI (option 93 = 7).
	e.checkHeadLog(t, regexp.MustCompile(`msg="dhcp request".* mac=`+e.mac+` .*arch=7`))
}

// TestNetbootUEFIHTTP boots by UEFI HTTP boot, which recent PCs offer beside
// PXE: OVMF's own network stack (no option ROM, and its PXE clients turned
// off through fw_cfg, so that HTTP boot is all it tries) asks for a URL and
// gets iPXE (snponly.efi) over HTTP; iPXE, now a UEFI program, asks the head
// again and fetches the machine's script.
func TestNetbootUEFIHTTP(t *testing.T) {
	needE2E(t)
	t.Parallel()
	e := newNetbootEnv(t)
	e.startHead(t, "server")
	e.boot(t, vm.UEFI, "-global", "virtio-net-pci.romfile=",
		"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
		"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
	n := e.checkStages(t)
	if !hasStage(n, bootstage.DHCPOffered, "/ipxe/"+contract.UEFIBootFile+" (uefi-http)") || !hasStage(n, bootstage.IPXELoaded, contract.UEFIBootFile) {
		t.Errorf("the firmware was not offered iPXE over HTTP, or did not fetch it: %+v", n.History)
	}
	e.checkLease(t, true)
	// The firmware asks as an HTTP boot client (option 93 = 16, vendor
	// class HTTPClient), iPXE then as iPXE on x86-64 UEFI (option 93 = 7).
	e.checkHeadLog(t, regexp.MustCompile(`msg="dhcp request".* mac=`+e.mac+` .*arch=16\(efi-x64-http\) vendor_class=HTTPClient`))
	e.checkHeadLog(t, regexp.MustCompile(`msg="dhcp request".* mac=`+e.mac+` .*arch=7\(efi-x64\) .*user_class=iPXE`))
}

// TestNetbootUEFIChainload boots with OVMF's own PXE client (the NIC has no
// iPXE ROM), as most real UEFI machines do, Secure Boot off: the firmware
// fetches Debian's shim over TFTP, shim Debian's signed GRUB, GRUB its
// configuration from the head over TFTP and then the machine's GRUB script
// over HTTP, which boots the kernel with the iPXE script's command line.
// (TestSecureBoot boots the same chain with Secure Boot on.)
func TestNetbootUEFIChainload(t *testing.T) {
	needE2E(t)
	t.Parallel()
	e := newNetbootEnv(t)
	e.loader = bootstage.GRUBLoaded
	e.startHead(t, "server")
	e.boot(t, vm.UEFI, "-global", "virtio-net-pci.romfile=")
	n := e.checkStages(t)
	if !hasStage(n, bootstage.GRUBLoaded, "tftp "+contract.GRUBNetFile) || !hasStage(n, bootstage.ScriptFetched, "grub") {
		t.Errorf("the firmware did not load GRUB through shim over TFTP, or GRUB fetched no script: %+v", n.History)
	}
	if hasStage(n, bootstage.IPXELoaded, "") {
		t.Errorf("a UEFI PXE client was handed iPXE: %+v", n.History)
	}
	if !slices.Contains(strings.Fields(e.cmdline), "BOOTIF=01-"+strings.ReplaceAll(e.mac, ":", "-")) {
		t.Errorf("GRUB's kernel command line lacks BOOTIF: %s", e.cmdline)
	}
	e.checkLease(t, true)
}

// TestNetbootUEFIProxySecureBoot boots a UEFI PC with Secure Boot on and
// Microsoft's keys, with its own PXE client, on a LAN whose DHCP server is
// dnsmasq, node1 serving proxyDHCP: shim, GRUB and the kernel must all
// pass Secure Boot, and GRUB must find the head from the proxy's answer,
// not the DHCP server's.
func TestNetbootUEFIProxySecureBoot(t *testing.T) {
	needE2E(t)
	t.Parallel()
	e := newNetbootEnv(t)
	e.loader, e.secureBoot = bootstage.GRUBLoaded, true
	dnsmasqLeases := e.startDnsmasq(t)
	e.startHead(t, "proxy")
	e.boot(t, vm.UEFI, "-global", "virtio-net-pci.romfile=")
	n := e.checkStages(t)
	e.checkForeignAddress(t, n, dnsmasqLeases)
}

func TestNetbootProxy(t *testing.T) {
	needE2E(t)
	t.Parallel()
	e := newNetbootEnv(t)
	dnsmasqLeases := e.startDnsmasq(t)
	e.startHead(t, "proxy")
	e.boot(t, vm.BIOS)
	n := e.checkStages(t)
	e.checkForeignAddress(t, n, dnsmasqLeases)
}

func TestNetbootAuto(t *testing.T) {
	needE2E(t)
	t.Parallel()
	e := newNetbootEnv(t)
	dnsmasqLeases := e.startDnsmasq(t)
	e.startHead(t, "auto")
	// The head probes the segment at start; it must find dnsmasq, take an
	// address on its LAN and serve proxyDHCP there, and say so.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := waitFile(ctx, e.headLog, "proxyDHCP on "+lanSubnet+" beside the DHCP server "+lanDHCPServer); err != nil {
		t.Fatalf("the head did not report serving proxyDHCP on dnsmasq's LAN: %v", err)
	}
	e.boot(t, vm.BIOS)
	n := e.checkStages(t)
	e.checkForeignAddress(t, n, dnsmasqLeases)
}

// TestNetbootInterfaceDetection runs the head without --interface in a
// namespace: it must refuse when no interface is connected, pick the only
// connected bridge, and refuse to guess between two. No VM is involved.
func TestNetbootInterfaceDetection(t *testing.T) {
	needE2E(t)
	t.Parallel()
	ctx := context.Background()
	tmp := t.TempDir()
	bootDir := filepath.Join(tmp, "boot")
	os.MkdirAll(bootDir, 0o755)
	for _, f := range []string{contract.KernelFile, contract.InitrdFile} {
		if err := os.WriteFile(filepath.Join(bootDir, f), []byte("not really "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ns := newNS(t)
	peer := newNS(t)
	// headRun runs the head until it serves (then stops it) or exits, and
	// returns its output.
	headRun := func() (string, bool) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		logPath := filepath.Join(tmp, "head.log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd := ns.Command(rctx, cdBinary, "head", "--subnet", netbootSubnet, "--dhcp", "off",
			"--boot-dir", bootDir, "--state-dir", filepath.Join(tmp, "state"))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		if err := tether.Start(cmd); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		for served := false; ; {
			data, _ := os.ReadFile(logPath)
			if !served && bytes.Contains(data, []byte(`msg="head serving"`)) {
				served = true
				cmd.Process.Signal(syscall.SIGTERM)
			}
			select {
			case err := <-exited:
				data, _ = os.ReadFile(logPath)
				if served && err != nil {
					t.Errorf("the head did not stop cleanly: %v\n%s", err, data)
				}
				return string(data), served
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	// bridgeWithCarrier adds a bridge with a veth port whose other end is in
	// peer, so the bridge has a carrier like a NIC with a cable.
	bridgeWithCarrier := func(br, port, peerName string) {
		t.Helper()
		if err := ns.AddBridge(ctx, br); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddVeth(ctx, ns, port, peer, peerName); err != nil {
			t.Fatal(err)
		}
		if err := ns.SetMaster(ctx, port, br); err != nil {
			t.Fatal(err)
		}
	}

	// A bridge whose only port is a tap nobody opened has no carrier.
	if err := ns.AddBridge(ctx, "br9"); err != nil {
		t.Fatal(err)
	}
	if err := ns.AddTap(ctx, "tap9", "br9"); err != nil {
		t.Fatal(err)
	}
	out, served := headRun()
	if served || !strings.Contains(out, "no connected wired network interface") ||
		!strings.Contains(out, "br9 (no cable)") || !strings.Contains(out, "--interface") {
		t.Errorf("without a connected interface, the head said:\n%s", out)
	}

	bridgeWithCarrier("br0", "p0", "e0")
	out, served = headRun()
	if !served || !strings.Contains(out, `msg="cluster interface" iface=br0 why="the only connected wired interface"`) ||
		!strings.Contains(out, "addr=10.99.0.1/24") {
		t.Errorf("with one connected bridge, the head said:\n%s", out)
	}

	bridgeWithCarrier("br1", "p1", "e1")
	out, served = headRun()
	if served || !regexp.MustCompile(`several connected network interfaces look alike \(br0: [^;]*; br1: `).MatchString(out) ||
		!strings.Contains(out, "network.interface") {
		t.Errorf("with two connected bridges, the head said:\n%s", out)
	}
}

// newNS makes a namespace that is deleted when the test ends.
func newNS(t *testing.T) *netns.NS {
	t.Helper()
	ns, err := netns.New(context.Background(), netns.UniqueName(netns.TestPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(context.Background()); err != nil {
			t.Errorf("deleting namespace: %v", err)
		}
	})
	return ns
}

// netbootEnv is one test's private network, head and VM.
type netbootEnv struct {
	ns       *netns.NS
	bootDir  string
	stateDir string
	headLog  string
	mac      string
	tmp      string
	cmdline  string // the VM's /proc/cmdline, once booted
	// loader is the stage of the first network boot program the VM's
	// firmware loads: iPXE (the default), or GRUB through shim.
	loader string
	// secureBoot boots the VM (UEFI) with Secure Boot on.
	secureBoot bool
}

// newNetbootEnv makes the namespace with br0 and tap0, and a boot folder
// with the default image's kernel and a test initrd.
func newNetbootEnv(t *testing.T) *netbootEnv {
	t.Helper()
	out, _ := defaultImage(t)
	ctx := context.Background()
	e := &netbootEnv{tmp: t.TempDir(), mac: randomMAC(), loader: bootstage.IPXELoaded}
	e.bootDir = filepath.Join(e.tmp, "boot")
	e.stateDir = filepath.Join(e.tmp, "state")
	e.headLog = filepath.Join(e.tmp, "head.log")
	if err := os.MkdirAll(e.bootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The image's kernel, and Debian's signed shim and GRUB that the
	// build publishes beside it for UEFI PXE clients.
	for _, f := range []string{contract.KernelFile, contract.UEFIPXEBootFile, contract.GRUBNetFile} {
		if err := atomicfile.Copy(filepath.Join(out, imagebuild.NetbootDir, f), filepath.Join(e.bootDir, f), atomicfile.CopyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Under both names: the head serves the NFS-root initrd for the default
	// shared root, the live one for the RAM root.
	for _, name := range []string{contract.InitrdFile, contract.NFSInitrdFile} {
		if err := writeTestInitrd(filepath.Join(e.bootDir, name)); err != nil {
			t.Fatal(err)
		}
	}

	ns := newNS(t)
	e.ns = ns
	// No address on br0: the head must add its own.
	if err := ns.AddBridge(ctx, "br0"); err != nil {
		t.Fatal(err)
	}
	if err := ns.AddTap(ctx, "tap0", "br0"); err != nil {
		t.Fatal(err)
	}
	return e
}

// startHead runs `clusterdebian head` in the namespace and waits until it
// serves. It is stopped with SIGTERM at cleanup and must exit cleanly.
func (e *netbootEnv) startHead(t *testing.T, mode string) {
	t.Helper()
	head := testsupport.StartProc(t, testsupport.ProcSpec{What: "the head", NS: e.ns, Log: e.headLog, MustStopCleanly: true,
		Argv: []string{cdBinary, "head",
			"--interface", "br0", "--subnet", netbootSubnet, "--dhcp", mode,
			"--boot-dir", e.bootDir, "--state-dir", e.stateDir,
			"--kernel-cmdline-extra", "rdinit=/init"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		select {
		case <-head.Exited(): // no use waiting for a head that is gone
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := waitFile(ctx, e.headLog, `msg="head serving"`); err != nil {
		t.Fatalf("the head did not start: %v", err)
	}
}

// startDnsmasq runs dnsmasq as a LAN's plain DHCP server (no PXE options)
// on lanSubnet, in a second namespace joined to br0, and returns its lease
// file.
func (e *netbootEnv) startDnsmasq(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dns := newNS(t)
	if err := netns.AddVeth(ctx, e.ns, "vdhcp", dns, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := e.ns.SetMaster(ctx, "vdhcp", "br0"); err != nil {
		t.Fatal(err)
	}
	if err := dns.AddAddr(ctx, "eth0", netip.PrefixFrom(netip.MustParseAddr(lanDHCPServer), netip.MustParsePrefix(lanSubnet).Bits())); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.tmp, "dnsmasq")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	leases, logPath := filepath.Join(dir, "leases"), filepath.Join(dir, "dnsmasq.log")
	testsupport.StartProc(t, testsupport.ProcSpec{What: "dnsmasq", NS: dns, Log: logPath,
		Argv: []string{"dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
			"--interface=eth0", "--bind-interfaces", "--dhcp-range=" + lanFirst + "," + lanLast + ",255.255.254.0,1h",
			"--dhcp-option=option:router," + lanRouter,
			"--dhcp-leasefile=" + leases, "--pid-file=" + filepath.Join(dir, "pid"), "--user=root", "--log-dhcp"}})
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitFile(wctx, logPath, "DHCP, IP range"); err != nil {
		t.Fatalf("dnsmasq did not start: %v", err)
	}
	return leases
}

// netbootRe matches the marker line the test initrd prints, with the
// kernel command line, once the line is complete.
var netbootRe = regexp.MustCompile(netbootMarker + ` ([^\r\n]*)\r?\n`)

// boot network-boots a diskless VM and waits for the test initrd's marker.
func (e *netbootEnv) boot(t *testing.T, fw vm.Firmware, qemuArgs ...string) {
	t.Helper()
	dir := t.TempDir()
	m, err := vm.Start(vm.Spec{
		Name:       "netboot-" + string(fw),
		Firmware:   fw,
		SecureBoot: e.secureBoot,
		NICs:       []vm.NIC{{Tap: "tap0", MAC: e.mac, Boot: true}},
		NetNS:      e.ns.Name,
		Dir:        dir,
		MemoryMiB:  512,
		ExtraArgs:  qemuArgs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			t.Logf("serial console (tail):\n%s", tail(m.Serial(), 60))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), netbootTimeout)
	defer cancel()
	line, err := m.WaitFor(ctx, netbootRe)
	if err != nil {
		t.Fatal(err)
	}
	e.cmdline = netbootRe.FindStringSubmatch(line)[1]
	t.Logf("VM %s booted; its kernel command line: %s", e.mac, e.cmdline)
	params := strings.Fields(e.cmdline)
	head := e.headAddr(t)
	for _, want := range []string{"clusterdebian.role=node", "clusterdebian.head=" + head, "rdinit=/init"} {
		if !slices.Contains(params, want) {
			t.Errorf("kernel command line lacks %s", want)
		}
	}
	if !slices.ContainsFunc(params, func(p string) bool { return strings.HasPrefix(p, "clusterdebian.token=") }) {
		t.Error("kernel command line has no clusterdebian.token=")
	}
	// The initrd powers the VM off; QEMU (-no-reboot) then exits.
	if err := m.Wait(ctx); err != nil {
		t.Errorf("the VM did not power off after the marker: %v", err)
	}
}

// checkStages reads the head's boot API and checks that the VM passed every
// stage of a network boot, and returns its entry.
func (e *netbootEnv) checkStages(t *testing.T) bootstage.Node {
	t.Helper()
	want := []string{bootstage.DHCPOffered, e.loader, bootstage.ScriptFetched, bootstage.KernelFetched, bootstage.InitrdFetched}
	var n bootstage.Node
	// The marker can come before the head has noted the end of the initrd
	// transfer; allow it a moment.
	deadline := time.Now().Add(30 * time.Second)
	for {
		nodes, raw, err := e.bootAPI()
		if err != nil {
			t.Fatalf("GET /api/v1/boot: %v", err)
		}
		n = bootstage.Node{}
		for _, x := range nodes {
			if strings.EqualFold(x.MAC, e.mac) {
				n = x
			}
		}
		var missing []string
		for _, s := range want {
			if !hasStage(n, s, "") {
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("/api/v1/boot lacks stages %v for %s:\n%s", missing, e.mac, raw)
		}
		time.Sleep(time.Second)
	}
}

// bootAPI fetches the head's boot progress from inside the namespace.
func (e *netbootEnv) bootAPI() ([]bootstage.Node, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// On loopback: in LAN mode the head's address is a lease of dnsmasq's.
	raw, err := e.ns.Output(ctx, "curl", "-sSf", "--max-time", "20", "http://127.0.0.1/api/v1/boot")
	if err != nil {
		return nil, raw, err
	}
	var nodes []bootstage.Node
	if err := json.Unmarshal(raw, &nodes); err != nil || nodes == nil {
		return nil, raw, fmt.Errorf("/api/v1/boot is not a list of nodes: %v: %s", err, raw)
	}
	return nodes, raw, nil
}

// checkHeadLog checks that the head's log has a line matching re.
func (e *netbootEnv) checkHeadLog(t *testing.T, re *regexp.Regexp) {
	t.Helper()
	if !e.headLogHas(t, re) {
		t.Errorf("the head's log has no line matching %s", re)
	}
}

// headLogHas reports whether the head's log has a line matching re.
func (e *netbootEnv) headLogHas(t *testing.T, re *regexp.Regexp) bool {
	t.Helper()
	data, err := os.ReadFile(e.headLog)
	if err != nil {
		t.Fatal(err)
	}
	return re.Match(data)
}

// efiROM names the package that gives QEMU its UEFI iPXE ROMs, with its
// version.
func efiROM() string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Package} ${Version}", "ipxe-qemu").Output()
	if err != nil || len(out) == 0 {
		return "efi-virtio.rom"
	}
	return "efi-virtio.rom from " + string(out)
}

// checkLease checks whether the head's own lease file holds the VM.
func (e *netbootEnv) checkLease(t *testing.T, want bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.stateDir, "leases.json"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if got := strings.Contains(strings.ToLower(string(data)), e.mac); got != want {
		t.Errorf("head's leases.json has the VM's lease: %v, want %v:\n%s", got, want, data)
	}
}

// checkForeignAddress checks that the VM's address came from dnsmasq, not
// from the head.
func (e *netbootEnv) checkForeignAddress(t *testing.T, n bootstage.Node, dnsmasqLeases string) {
	t.Helper()
	e.checkLease(t, false)
	data, err := os.ReadFile(dnsmasqLeases)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ToLower(string(data)), e.mac) {
		t.Errorf("dnsmasq's lease file lacks the VM %s:\n%s", e.mac, data)
	}
	ip, err := netip.ParseAddr(n.IP)
	if err != nil {
		t.Fatalf("the head saw no address for the VM: %+v", n)
	}
	if ip.Less(netip.MustParseAddr(lanFirst)) || netip.MustParseAddr(lanLast).Less(ip) {
		t.Errorf("the VM fetched its files from %s, outside dnsmasq's range %s-%s", ip, lanFirst, lanLast)
	}
	// The head served the LAN: its address is a lease of dnsmasq's.
	if head := netip.MustParseAddr(e.headAddr(t)); !netip.MustParsePrefix(lanSubnet).Contains(head) || !strings.Contains(string(data), " "+head.String()+" ") {
		t.Errorf("the head serves from %s, not from a lease of dnsmasq's on %s:\n%s", head, lanSubnet, data)
	}
}

// headAddrRe is the head's log line naming its address on the cluster
// network.
var headAddrRe = regexp.MustCompile(`msg="head serving" iface=\S+ addr=(\S+) `)

// headAddr returns the address the head serves from, as its log says:
// netbootHead in server mode, a lease of the LAN's in proxy mode.
func (e *netbootEnv) headAddr(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(e.headLog)
	if err != nil {
		t.Fatal(err)
	}
	m := headAddrRe.FindSubmatch(data)
	if m == nil {
		t.Fatalf("the head's log names no address:\n%s", data)
	}
	return string(m[1])
}

func hasStage(n bootstage.Node, stage, detailPart string) bool {
	for _, e := range n.History {
		if e.Stage == stage && strings.Contains(e.Detail, detailPart) {
			return true
		}
	}
	return false
}

// waitFile waits until the file contains text.
func waitFile(ctx context.Context, path, text string) error {
	err := testsupport.Poll(ctx, 200*time.Millisecond, time.Hour, func() bool {
		data, err := os.ReadFile(path)
		return err == nil && bytes.Contains(data, []byte(text))
	})
	if err != nil {
		return fmt.Errorf("waiting for %q in %s: %w", text, filepath.Base(path), err)
	}
	return nil
}

// randomMAC returns a MAC in QEMU's range 52:54:00, different per test.
func randomMAC() string {
	b := make([]byte, 3)
	rand.Read(b)
	return net.HardwareAddr(append([]byte{0x52, 0x54, 0x00}, b...)).String()
}

// testInit is the test initrd's /init: it shows the kernel command line
// the head gave, on the serial line (/dev/console is the screen, tty0, the
// last console= on the command line), and powers off.
const testInit = `#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
msg="` + netbootMarker + ` $(/bin/busybox cat /proc/cmdline)"
echo "$msg" > /dev/console
echo "$msg" > /dev/ttyS0
/bin/busybox sync
/bin/busybox poweroff -f
`

// writeTestInitrd writes a gzipped newc cpio with busybox (from
// busybox-static) and testInit. It is written here rather than with cpio(1)
// so that it can hold device nodes without mknod.
func writeTestInitrd(path string) error {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("%w (install busybox-static)", err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	w := &cpioWriter{w: zw}
	for _, d := range []string{"bin", "dev", "proc", "sys"} {
		w.add(d, syscall.S_IFDIR|0o755, 0, 0, nil)
	}
	w.add("dev/console", syscall.S_IFCHR|0o600, 5, 1, nil)
	w.add("bin/busybox", syscall.S_IFREG|0o755, 0, 0, bb)
	w.add("bin/sh", syscall.S_IFLNK|0o777, 0, 0, []byte("busybox"))
	w.add("init", syscall.S_IFREG|0o755, 0, 0, []byte(testInit))
	w.add("TRAILER!!!", 0, 0, 0, nil)
	if w.err != nil {
		return w.err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// cpioWriter writes the "newc" cpio format the kernel unpacks initramfs from.
type cpioWriter struct {
	w   io.Writer
	ino int
	n   int64
	err error
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(b)
	c.n += int64(n)
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) add(name string, mode uint32, rdevMajor, rdevMinor int, data []byte) {
	c.ino++
	nlink := 1
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
}
