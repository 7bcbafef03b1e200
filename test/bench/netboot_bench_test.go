//go:build bench

package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
)

// benchNet is a server namespace and a client namespace joined by a veth
// pair: the same setup for our servers and the reference servers.
type benchNet struct {
	server, client *netns.NS
}

var (
	serverAddr = netip.MustParsePrefix("10.98.0.1/24")
	clientAddr = netip.MustParsePrefix("10.98.0.2/24")
)

func newBenchNet(t *testing.T) *benchNet {
	t.Helper()
	if err := netns.Check(); err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	base := netns.UniqueName(netns.TestPrefix + "b")
	srv, err := netns.New(ctx, base+"s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Delete(context.Background()) })
	cli, err := netns.New(ctx, base+"c")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Delete(context.Background()) })
	if err := netns.AddVeth(ctx, srv, "eth0", cli, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddAddr(ctx, "eth0", serverAddr); err != nil {
		t.Fatal(err)
	}
	if err := cli.AddAddr(ctx, "eth0", clientAddr); err != nil {
		t.Fatal(err)
	}
	// The DHCP burst's clients have made-up MACs. They ask for broadcast
	// replies (dnsmasq and ours honour that) and dhcp.Burst turns on
	// promiscuous mode itself while it runs; this covers any server that
	// unicasts to the made-up MACs regardless.
	if err := cli.IP(ctx, "link", "set", "eth0", "promisc", "on"); err != nil {
		t.Fatal(err)
	}
	return &benchNet{server: srv, client: cli}
}

// startIn starts a long-running server inside ns, its output in a log
// file named logName; it is stopped at cleanup if it still runs.
func startIn(t *testing.T, ns *netns.NS, logName string, argv ...string) *testsupport.Proc {
	t.Helper()
	return testsupport.StartProc(t, testsupport.ProcSpec{What: argv[0], NS: ns,
		Log: filepath.Join(t.TempDir(), logName), Argv: argv})
}

// waitFor waits until a server answers, by polling a probe.
func waitFor(t *testing.T, what string, probe func() bool) {
	t.Helper()
	testsupport.WaitFor(t, context.Background(), what+" to come up", 200*time.Millisecond, 30*time.Second, probe, nil)
}

// bootDir returns a folder with the boot files: a built image's netboot/ if
// NETBOOT_DIR names one, else a 256 MiB stand-in squashfs.
func bootDir(t *testing.T) (dir, big string) {
	t.Helper()
	if d := os.Getenv("NETBOOT_DIR"); d != "" {
		return d, "01-base.squashfs"
	}
	dir = t.TempDir()
	f, err := os.Create(filepath.Join(dir, "01-base.squashfs"))
	if err != nil {
		t.Fatal(err)
	}
	// Random-ish content so that nothing along the way can shortcut zeros.
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>8)
	}
	for i := 0; i < 256; i++ {
		f.Write(buf)
	}
	f.Close()
	for _, n := range []string{"vmlinuz", "initrd.img"} {
		os.WriteFile(filepath.Join(dir, n), buf[:64<<10], 0o644)
	}
	return dir, "01-base.squashfs"
}

func startHead(t *testing.T, bn *benchNet, bin, boot, mode string) *testsupport.Proc {
	t.Helper()
	state := t.TempDir()
	head := startIn(t, bn.server, "head.log", bin, "head", "--interface", "eth0", "--subnet", "10.98.0.0/24",
		"--dhcp", mode, "--boot-dir", boot, "--state-dir", state)
	testsupport.WaitFor(t, context.Background(), "clusterdebian head to come up", 200*time.Millisecond, 30*time.Second, func() bool {
		return bn.client.Command(context.Background(), "curl", "-sf", "-o", "/dev/null", "http://10.98.0.1/api/v1/boot").Run() == nil
	}, head.Output)
	return head
}

func timeIt(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

// TestNetbootBenchmark prints TFTP, HTTP and DHCP figures of the head daemon
// against tftpd-hpa, nginx and dnsmasq, each in the same namespace setup.
func TestNetbootBenchmark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bin := buildBinary(t, t.TempDir())
	bn := newBenchNet(t)
	boot, big := bootDir(t)
	ctx := context.Background()
	const tftpRounds = 40
	tftpFile := "undionly.kpxe"

	// TFTP: tftp-hpa fetches the iPXE binary tftpRounds times, in sequence.
	fetchTFTP := func(port string) time.Duration {
		out := filepath.Join(t.TempDir(), "f")
		return timeIt(func() {
			for i := 0; i < tftpRounds; i++ {
				c := bn.client.Command(ctx, "tftp", "10.98.0.1", port, "-m", "binary", "-c", "get", tftpFile, out)
				if b, err := c.CombinedOutput(); err != nil {
					t.Fatalf("tftp: %v %s", err, b)
				}
			}
		})
	}
	head := startHead(t, bn, bin, boot, "off")
	ours := fetchTFTP("69")

	// HTTP: 16 parallel clients fetch the big layer.
	fetchHTTP := func(base string) (time.Duration, int64) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var total int64
		d := timeIt(func() {
			for i := 0; i < 16; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := bn.client.Output(ctx, "curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", base+"/"+big)
					if err != nil {
						t.Errorf("curl: %v", err)
						return
					}
					var n int64
					fmt.Sscan(string(out), &n)
					mu.Lock()
					total += n
					mu.Unlock()
				}()
			}
			wg.Wait()
		})
		return d, total
	}
	oursHTTP, oursBytes := fetchHTTP("http://10.98.0.1/netboot")
	head.Stop()

	// References, same files, same namespaces.
	hpa := startIn(t, bn.server, "tftpd.log", "in.tftpd", "--foreground", "--address", "10.98.0.1:69", "--secure", "/usr/lib/ipxe")
	time.Sleep(300 * time.Millisecond)
	ref := fetchTFTP("69")
	hpa.Stop()

	conf := filepath.Join(t.TempDir(), "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off; user root; worker_processes auto; pid %s/nginx.pid; error_log stderr;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
  server { listen 10.98.0.1:80; location /netboot/ { alias %s/; } } }
`, filepath.Dir(conf), boot)), 0o644)
	nginx := startIn(t, bn.server, "nginx.log", "nginx", "-c", conf)
	waitFor(t, "nginx", func() bool {
		return bn.client.Command(ctx, "curl", "-sf", "-o", "/dev/null", "-r", "0-0", "http://10.98.0.1/netboot/"+big).Run() == nil
	})
	refHTTP, refBytes := fetchHTTP("http://10.98.0.1/netboot")
	nginx.Stop()

	oursDHCP, refDHCP, refPingDHCP := dhcpBench(t, bn, bin, boot)

	mbps := func(b int64, d time.Duration) float64 { return float64(b) / d.Seconds() / (1 << 20) }
	fmt.Printf("\nNetboot benchmark (server and client namespaces joined by a veth pair)\n")
	fmt.Printf("  TFTP %s x%d     ours %6.2f s   tftpd-hpa %6.2f s   speed ratio ours/hpa %.2f\n",
		tftpFile, tftpRounds, ours.Seconds(), ref.Seconds(), ref.Seconds()/ours.Seconds())
	fmt.Printf("  HTTP %s to 16 clients   ours %7.0f MiB/s   nginx %7.0f MiB/s   ratio %.2f (target >= 0.9)\n",
		big, mbps(oursBytes, oursHTTP), mbps(refBytes, refHTTP), mbps(oursBytes, oursHTTP)/mbps(refBytes, refHTTP))
	printDHCP(oursDHCP, refDHCP, refPingDHCP)
}

// TestDHCPBurstBenchmark is the DHCP part of TestNetbootBenchmark alone, for
// repeating that measurement quickly.
func TestDHCPBurstBenchmark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bin := buildBinary(t, t.TempDir())
	bn := newBenchNet(t)
	boot, _ := bootDir(t)
	oursDHCP, refDHCP, refPingDHCP := dhcpBench(t, bn, bin, boot)
	fmt.Printf("\nDHCP benchmark (server and client namespaces joined by a veth pair)\n")
	printDHCP(oursDHCP, refDHCP, refPingDHCP)
}

const burstSize = 250

// dhcpBench runs a burst of burstSize clients against our server, then
// against dnsmasq twice: with --no-ping, like ours, which checks no address
// before offering it (the like-for-like reference), and with its defaults
// (an ICMP ping of each new address before offering it: up to 3 s each, a
// few addresses per 30 s, the burst waiting behind them), for information.
// It checks that ours gave every client its own address.
func dhcpBench(t *testing.T, bn *benchNet, bin, boot string) (ours, ref, refPing dhcp.BurstResult) {
	t.Helper()
	ctx := context.Background()
	burst := func() dhcp.BurstResult {
		var res dhcp.BurstResult
		err := bn.client.Do(func() error {
			var err error
			res, err = dhcp.Burst(ctx, "eth0", burstSize)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	head := startHead(t, bn, bin, boot, "server")
	ours = burst()
	head.Stop()
	if len(ours.Errors) > 0 {
		t.Logf("our burst: %d errors, first: %v", len(ours.Errors), ours.Errors[0])
	}
	if len(ours.Leases) != burstSize || !ours.Distinct() {
		t.Errorf("our DHCP server gave %d leases (distinct=%v) to %d clients", len(ours.Leases), ours.Distinct(), burstSize)
	}

	dnsmasqBurst := func(extra ...string) dhcp.BurstResult {
		dir := t.TempDir()
		args := append([]string{"dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
			"--interface=eth0", "--bind-interfaces", "--dhcp-range=10.98.0.2,10.98.0.254,255.255.255.0,12h",
			"--dhcp-leasefile=" + filepath.Join(dir, "dnsmasq.leases"), "--pid-file=" + filepath.Join(dir, "dnsmasq.pid"),
			"--dhcp-authoritative"}, extra...)
		dnsmasq := startIn(t, bn.server, "dnsmasq.log", args...)
		logOf := dnsmasq.Output
		waitFor(t, "dnsmasq", func() bool { return strings.Contains(logOf(), "DHCP, IP range") })
		res := burst()
		dnsmasq.Stop()
		if len(res.Errors) > 0 {
			log := logOf()
			t.Logf("dnsmasq %v burst: %d errors, first: %v; dnsmasq saw %d DISCOVER, %d REQUEST, sent %d OFFER, %d ACK, %d NAK",
				extra, len(res.Errors), res.Errors[0], strings.Count(log, "DHCPDISCOVER"), strings.Count(log, "DHCPREQUEST"),
				strings.Count(log, "DHCPOFFER"), strings.Count(log, "DHCPACK"), strings.Count(log, "DHCPNAK"))
		}
		return res
	}
	ref = dnsmasqBurst("--no-ping")
	refPing = dnsmasqBurst()
	return ours, ref, refPing
}

func printDHCP(ours, ref, refPing dhcp.BurstResult) {
	rate := func(r dhcp.BurstResult) float64 { return float64(len(r.Leases)) / r.Elapsed.Seconds() }
	line := func(r dhcp.BurstResult) string {
		return fmt.Sprintf("%6.0f leases/s (%d leases in %v, distinct=%v, %d errors)",
			rate(r), len(r.Leases), r.Elapsed.Round(time.Millisecond), r.Distinct(), len(r.Errors))
	}
	fmt.Printf("  DHCP burst of %d         ours                %s\n", burstSize, line(ours))
	fmt.Printf("                             dnsmasq --no-ping   %s   ratio ours/dnsmasq %.2f (target >= 1)\n", line(ref), rate(ours)/rate(ref))
	fmt.Printf("                             dnsmasq (pings)     %s   ratio %.2f (for information)\n", line(refPing), rate(ours)/rate(refPing))
}
