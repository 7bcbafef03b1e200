package dhcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
)

// readLeases returns the lease file's leases as MAC → address.
func readLeases(t *testing.T, file string) map[string]netip.Addr {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil {
		t.Fatalf("lease file %s: %v", file, err)
	}
	out := map[string]netip.Addr{}
	for _, l := range lf.Leases {
		out[l.MAC] = l.IP
	}
	return out
}

// A truncated lease file is set aside, not fatal, and the machines the head
// knows from its registry keep their addresses.
func TestDamagedLeaseFile(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, ModeServer)
	cfg.LeaseFile = filepath.Join(dir, "leases.json")
	s1 := newTestServer(t, cfg)
	macs := []net.HardwareAddr{mustMAC("52:54:00:00:05:01"), mustMAC("52:54:00:00:05:02"), mustMAC("52:54:00:00:05:03")}
	had := map[string]netip.Addr{}
	for _, m := range macs {
		had[m.String()] = toAddr(dora(t, s1, m).YourIPAddr)
	}
	data, err := os.ReadFile(cfg.LeaseFile)
	if err != nil {
		t.Fatal(err)
	}
	truncated := data[:len(data)/2]
	if err := os.WriteFile(cfg.LeaseFile, truncated, 0o644); err != nil {
		t.Fatal(err)
	}

	// The registry knows the first two machines (the third never
	// registered).
	cfg.Known = map[string]netip.Addr{macs[0].String(): had[macs[0].String()], macs[1].String(): had[macs[1].String()]}
	var logs syncbuf.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s2, err := New(cfg)
	if err != nil {
		t.Fatalf("New with a truncated lease file: %v", err)
	}
	kept, _ := filepath.Glob(cfg.LeaseFile + ".corrupt-*")
	if len(kept) != 1 {
		t.Fatalf("damaged file kept as %v, want one copy", kept)
	}
	if b, _ := os.ReadFile(kept[0]); !bytes.Equal(b, truncated) {
		t.Errorf("%s holds %q, want the damaged content %q", kept[0], b, truncated)
	}
	if !strings.Contains(logs.String(), "lease file is corrupt") || !strings.Contains(logs.String(), "leases rebuilt from the node registry") {
		t.Errorf("log does not say what was done:\n%s", logs.String())
	}
	onDisk := readLeases(t, cfg.LeaseFile)
	if len(onDisk) != 2 || onDisk[macs[0].String()] != had[macs[0].String()] || onDisk[macs[1].String()] != had[macs[1].String()] {
		t.Errorf("rebuilt lease file %v, want the registry's %v", onDisk, cfg.Known)
	}
	// A new machine first: it must not get a registered node's address.
	fresh := toAddr(dora(t, s2, mustMAC("52:54:00:00:05:09")).YourIPAddr)
	for _, m := range macs[:2] {
		if fresh == had[m.String()] {
			t.Errorf("new machine got %v, the address of running node %s", fresh, m)
		}
		if ip := toAddr(dora(t, s2, m).YourIPAddr); ip != had[m.String()] {
			t.Errorf("%s got %v after the lease file was rebuilt, had %v", m, ip, had[m.String()])
		}
	}
}

// inMountNamespace runs the calling test again in a private mount
// namespace (unshare(1)), where it may mount a file system that disappears
// with the process; it reports whether the caller is that run. The outer run
// fails unless the inner one passed.
func inMountNamespace(t *testing.T) bool {
	t.Helper()
	const env = "CLUSTERDEBIAN_TEST_MOUNTNS"
	if os.Getenv(env) == t.Name() {
		return true
	}
	if testing.Short() {
		t.Skip("mounts a tmpfs: skipped in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: needs root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private",
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), env+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("in a mount namespace:\n%s", out)
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("run in a mount namespace failed (%v)", err)
	}
	return false
}

// fill writes to dir until its file system is full and returns the file
// that holds the space.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return p
		}
	}
}

// A full state folder: no lease is acknowledged that is not on disk, the
// head says why, known clients keep renewing, and once there is space again
// nothing acknowledged was lost. The figures go to the test log.
func TestStateDirFull(t *testing.T) {
	if !inMountNamespace(t) {
		return
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, 0)
	cfg := testConfig(t, ModeServer)
	cfg.LeaseFile = filepath.Join(dir, "leases.json")
	var logs syncbuf.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := newTestServer(t, cfg)

	acked := map[string]netip.Addr{}
	var known []*dhcpv4.DHCPv4
	for i := range 5 {
		m := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x06, byte(i)}
		a := dora(t, s, m)
		acked[m.String()] = toAddr(a.YourIPAddr)
		known = append(known, a)
	}
	filler := fill(t, dir)

	// 20 new clients on a full disk: offers, but no ACK.
	const newClients = 20
	var held []*dhcpv4.DHCPv4
	full := 0
	for i := range newClients {
		m := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x07, byte(i)}
		offer, _ := roundTrip(t, s, discover(m), 67, peer67)
		if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
			t.Fatalf("no OFFER for %s on a full disk: %v", m, offer)
		}
		req := request(offer)
		held = append(held, req)
		r, _ := roundTrip(t, s, req, 67, peer67)
		switch {
		case r == nil:
			full++
		case r.MessageType() == dhcpv4.MessageTypeAck:
			t.Errorf("%s ACKed %v with the state folder full", m, r.YourIPAddr)
		default:
			t.Errorf("%s got %v with the state folder full; want no answer", m, r.MessageType())
		}
	}
	// Known clients renew (RENEWING: ciaddr, no server identifier).
	renewed := 0
	for _, a := range known {
		ren, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(a.ClientHWAddr),
			dhcpv4.WithClientIP(a.YourIPAddr))
		if err != nil {
			t.Fatal(err)
		}
		if r, _ := roundTrip(t, s, ren, 67, peer67); r != nil && r.MessageType() == dhcpv4.MessageTypeAck && r.YourIPAddr.Equal(a.YourIPAddr) {
			renewed++
		} else {
			t.Errorf("renewal of %s (%v) on a full disk: %v", a.ClientHWAddr, a.YourIPAddr, r)
		}
	}
	if !strings.Contains(logs.String(), "state directory full") {
		t.Errorf("log does not say the state directory is full:\n%s", logs.String())
	}

	// Space again: the clients retransmit their REQUESTs.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for _, req := range held {
		r, _ := roundTrip(t, s, req, 67, peer67)
		if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("%s: retried REQUEST with space again got %v", req.ClientHWAddr, r)
		}
		acked[req.ClientHWAddr.String()] = toAddr(r.YourIPAddr)
	}

	// Restart: every acknowledged lease is on disk, each address once.
	s2 := newTestServer(t, cfg)
	lost, dup := 0, 0
	byIP := map[netip.Addr]string{}
	for _, l := range s2.Leases() {
		if other, ok := byIP[l.IP]; ok {
			t.Errorf("%v leased to %s and %s", l.IP, other, l.MAC)
			dup++
		}
		byIP[l.IP] = l.MAC
	}
	for mac, ip := range acked {
		if byIP[ip] != mac {
			t.Errorf("acknowledged lease %s %v lost (file has %q)", mac, ip, byIP[ip])
			lost++
		}
	}
	// A restart on a full disk, with a registered node the lease file
	// lacks: its lease is rebuilt from the registry, which holds it on
	// disk, so its renewal is ACKed; a new machine still gets none.
	fill(t, dir)
	regMAC, regIP := mustMAC("52:54:00:00:08:01"), netip.MustParseAddr("10.99.0.200")
	cfg.Known = map[string]netip.Addr{regMAC.String(): regIP}
	s3 := newTestServer(t, cfg)
	ren, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(regMAC), dhcpv4.WithClientIP(regIP.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := roundTrip(t, s3, ren, 67, peer67); r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("renewal of a registered node on a full disk after a restart: %v", r)
	}
	offer, _ := roundTrip(t, s3, discover(mustMAC("52:54:00:00:08:02")), 67, peer67)
	if offer == nil {
		t.Fatal("no OFFER for a new machine")
	}
	if r, _ := roundTrip(t, s3, request(offer), 67, peer67); r != nil {
		t.Errorf("new machine on a full disk after a restart got %v", r.MessageType())
	}

	t.Logf("full state folder: %d of %d new clients unanswered (0 ACKed), %d of %d known clients renewed; after space: %d leases acknowledged, %d lost, %d duplicated",
		full, newClients, renewed, len(known), len(acked), lost, dup)
	if full != newClients || renewed != len(known) || lost != 0 || dup != 0 {
		t.Errorf("figures above: want %d unanswered, %d renewed, 0 lost, 0 duplicated", newClients, len(known))
	}
}
