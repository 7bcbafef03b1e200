package dhcpclient

// TestNetnsDnsmasq takes, renews and rebinds a lease from a real dnsmasq in
// network namespaces the test makes and deletes: the raw sockets of Open,
// from the interface's own MAC, unicast to the server while renewing and
// broadcast while rebinding.
//
//	cdt-ds…  eth0 192.168.50.1/23, dnsmasq
//	   │ veth
//	cdt-dc…  eth0, MAC 02:cd:00:00:00:21, no address (the client)

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
)

const clientMAC = "02:cd:00:00:00:21"

func TestNetnsDnsmasq(t *testing.T) {
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Skip("needs dnsmasq (clusterdebian doctor --fix installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nss := testsupport.Namespaces(t, ctx, "ds", "dc")
	srv, cl := nss[0], nss[1]
	must(t, netns.AddVeth(ctx, srv, "eth0", cl, "eth0"))
	must(t, cl.IP(ctx, "link", "set", "eth0", "address", clientMAC))
	must(t, srv.AddAddr(ctx, "eth0", netip.MustParsePrefix("192.168.50.1/23")))

	dir := t.TempDir()
	var logBuf syncbuf.Buffer
	cmd := srv.Command(ctx, bin, "--no-daemon", "--conf-file=/dev/null", "--interface=eth0", "--bind-interfaces",
		"--port=0", "--no-hosts", "--no-resolv", "--no-ping", "--dhcp-authoritative",
		"--dhcp-range=192.168.50.100,192.168.51.200,255.255.254.0,2m", "--dhcp-option=option:router,192.168.50.254",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"),
		"--user=root", "--group=root", "--log-facility=-", "--log-dhcp")
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	must(t, cmd.Start())
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Logf("dnsmasq:\n%s", logBuf.String())
	}()

	err = cl.Do(func() error {
		ex, err := Open("eth0", "node1")
		if err != nil {
			return err
		}
		k := &Keeper{Exchanger: ex, Log: slog.New(slog.DiscardHandler)}
		// dnsmasq needs a moment to listen; the client's own retries
		// cover that, and so do a few more tries here.
		var l Lease
		for try := 0; ; try++ {
			if l, err = k.Acquire(ctx, netip.Addr{}); err == nil || try == 5 || !errors.Is(err, ErrNoAnswer) {
				break
			}
		}
		if err != nil {
			return err
		}
		if !netip.MustParsePrefix("192.168.50.0/23").Contains(l.Addr.Addr()) || l.Addr.Bits() != 23 ||
			l.Server != netip.MustParseAddr("192.168.50.1") || l.Router != netip.MustParseAddr("192.168.50.254") || l.Duration != 2*time.Minute {
			t.Errorf("lease %+v, want one of 192.168.50.0/23 from 192.168.50.1 with router .254 for 2m", l)
		}
		// The kernel answers the server's ARP for the address it renews
		// with, as it would on the head, which configures it.
		if out, err := exec.Command("ip", "addr", "add", l.Addr.String(), "dev", "eth0").CombinedOutput(); err != nil {
			return errors.New(string(out))
		}
		for _, rebind := range []bool{false, true} {
			ack, err := ex.Extend(ctx, l, rebind)
			if err != nil {
				t.Errorf("Extend (rebind %v): %v", rebind, err)
				continue
			}
			nl, err := FromACK(ack, time.Now())
			if err != nil || nl.Addr != l.Addr {
				t.Errorf("Extend (rebind %v): %+v, %v; want %v again", rebind, nl, err, l.Addr)
			}
		}
		// Back to INIT, asking for the same address: dnsmasq gives it.
		again, err := k.Acquire(ctx, l.Addr.Addr())
		if err != nil || again.Addr != l.Addr {
			t.Errorf("Acquire asking for %v: %+v, %v", l.Addr, again, err)
		}
		return nil
	})
	must(t, err)
	log := logBuf.String()
	// The requests came from the client's own MAC, named node1; renewing
	// was unicast to the server, rebinding broadcast.
	for _, want := range []string{"DHCPREQUEST(eth0) 192.168.50.", clientMAC + " node1", "client provides name: node1"} {
		if !strings.Contains(log, want) {
			t.Errorf("dnsmasq's log lacks %q", want)
		}
	}
	if n := strings.Count(log, "DHCPACK(eth0)"); n != 4 {
		t.Errorf("dnsmasq sent %d ACKs, want 4 (lease, renewal, rebinding, again)", n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
