package doctor

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io/fs"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

var now = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

// fakeHost is a healthy node1 in server mode at 10.99.0.1 with two nodes
// on the RAM root; each test breaks one thing.
type fakeHost struct {
	net      registry.Network
	netErr   error
	open     []head.Listener
	exports  []Export
	expErr   error
	fs       FS
	avail    uint64
	total    uint64
	nodes    []registry.Node
	nodesErr error
	files    map[string][]byte
}

func (f *fakeHost) Network() (registry.Network, error)             { return f.net, f.netErr }
func (f *fakeHost) Listening() ([]head.Listener, error)            { return f.open, nil }
func (f *fakeHost) Exports(context.Context) ([]Export, error)      { return f.exports, f.expErr }
func (f *fakeHost) StatFS(string) (FS, error)                      { return f.fs, nil }
func (f *fakeHost) MemInfo() (uint64, uint64, error)               { return f.avail, f.total, nil }
func (f *fakeHost) Nodes(context.Context) ([]registry.Node, error) { return f.nodes, f.nodesErr }
func (f *fakeHost) Now() time.Time                                 { return now }
func (f *fakeHost) ReadFile(p string) ([]byte, error) {
	if d, ok := f.files[p]; ok {
		return d, nil
	}
	return nil, fs.ErrNotExist
}

var opts = Options{Root: contract.RootRAM, StateDir: "/var/lib/clusterdebian", Exports: true,
	Certs: []string{"/run/clusterdebian/ssh/cert.pub", "/etc/ssh/cert.pub"}, CAPub: "/var/lib/clusterdebian/ca.pub"}

// cert signs a host certificate valid until validBefore (0: forever) with
// signer and returns it in authorized_keys form.
func cert(t *testing.T, signer ssh.Signer, validBefore time.Time) []byte {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	c := &ssh.Certificate{Key: key, CertType: ssh.HostCert, ValidPrincipals: []string{"node1"}, ValidBefore: ssh.CertTimeInfinity}
	if !validBefore.IsZero() {
		c.ValidBefore = uint64(validBefore.Unix())
	}
	if err := c.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	return ssh.MarshalAuthorizedKey(c)
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func healthy(t *testing.T) (*fakeHost, ssh.Signer) {
	ca := newSigner(t)
	addr := netip.MustParseAddr("10.99.0.1")
	return &fakeHost{
		net:     registry.Network{Address: "10.99.0.1", Mode: string(dhcp.ModeServer)},
		open:    append(head.Listeners(dhcp.ModeServer, addr, 80), head.Listener{Proto: "tcp", Addr: netip.MustParseAddrPort("0.0.0.0:22")}),
		exports: []Export{{"/home", "10.99.0.2"}, {"/home", "10.99.0.3"}},
		fs:      FS{Size: 512 << 20, Free: 500 << 20, Type: "tmpfs"},
		avail:   3 << 30, total: 4 << 30,
		nodes: []registry.Node{
			{Name: "node1", IP: "10.99.0.1", Role: registry.RoleHead, State: registry.StateUp},
			{Name: "node2", IP: "10.99.0.2", Role: registry.RoleNode, State: registry.StateUp},
			{Name: "node3", IP: "10.99.0.3", Role: registry.RoleNode, State: registry.StateUp},
		},
		files: map[string][]byte{
			opts.CAPub:    ssh.MarshalAuthorizedKey(ca.PublicKey()),
			opts.Certs[0]: cert(t, ca, time.Time{}),
		},
	}, ca
}

// check runs doctor on h and returns the result of one check, failing the
// test unless it has status want and its detail names every cause.
func check(t *testing.T, h Host, name string, want Status, causes ...string) Result {
	t.Helper()
	rs := Run(context.Background(), h, opts)
	if len(rs) != 6 {
		t.Fatalf("%d results, want 6: %v", len(rs), rs)
	}
	for _, r := range rs {
		if r.Check != name {
			continue
		}
		if r.Status != want {
			t.Errorf("%s: %s, want %s", name, r, want)
		}
		for _, c := range causes {
			if !strings.Contains(r.Detail, c) {
				t.Errorf("%s: %q does not name %q", name, r.Detail, c)
			}
		}
		if want == Fail && !Failed(rs) {
			t.Errorf("Failed is false with %s", r)
		}
		return r
	}
	t.Fatalf("no %s check in %v", name, rs)
	return Result{}
}

func TestHealthy(t *testing.T) {
	h, _ := healthy(t)
	rs := Run(context.Background(), h, opts)
	for _, r := range rs {
		if r.Status != OK {
			t.Errorf("healthy node1: %s", r)
		}
	}
	if Failed(rs) {
		t.Error("Failed on a healthy node1")
	}
	check(t, h, "ports", OK, "udp 0.0.0.0:67", "tcp 10.99.0.1:80")
	check(t, h, "exports", OK, "/home exported to all 2 registered nodes")
	check(t, h, "heartbeats", OK, "all 2 nodes")
	check(t, h, "certs", OK, "never expires")
}

func TestPorts(t *testing.T) {
	h, _ := healthy(t)
	h.open = h.open[1:] // DHCP gone
	check(t, h, "ports", Fail, "DHCP (udp 0.0.0.0:67)")

	h, _ = healthy(t)
	h.net.Mode = string(dhcp.ModeProxy) // proxy mode wants 4011 too
	check(t, h, "ports", Fail, "udp 0.0.0.0:4011")

	h, _ = healthy(t)
	var noLoopback []head.Listener
	for _, l := range h.open {
		if !l.Addr.Addr().IsLoopback() {
			noLoopback = append(noLoopback, l)
		}
	}
	h.open = noLoopback
	check(t, h, "ports", Warn, "tcp 127.0.0.1:80")

	h, _ = healthy(t)
	h.netErr = fs.ErrNotExist
	check(t, h, "ports", Fail, "is clusterdebian-head running")
}

func TestExports(t *testing.T) {
	h, _ := healthy(t)
	h.exports = h.exports[:1]
	check(t, h, "exports", Fail, "node3 (10.99.0.3)")

	h, _ = healthy(t)
	h.exports = []Export{{"/", "10.99.0.2"}, {"/", "10.99.0.3"}} // the shared root's path, on the RAM root
	check(t, h, "exports", Fail, "node2 (10.99.0.2), node3 (10.99.0.3)")

	h, _ = healthy(t)
	h.expErr = errors.New("exit status 1: exportfs: no nfsd")
	check(t, h, "exports", Fail, "no nfsd")

	h, _ = healthy(t)
	h.nodesErr = errors.New("connection refused")
	check(t, h, "exports", Fail, "connection refused")
	check(t, h, "heartbeats", Fail, "connection refused")
}

func TestState(t *testing.T) {
	h, _ := healthy(t)
	h.fs.Free = 4 << 20
	check(t, h, "state", Warn, "4.0 MiB free", "nearly full")
	h.fs.Free = 100 << 10
	check(t, h, "state", Fail, "full", "tmpfs")
}

func TestMemory(t *testing.T) {
	h, _ := healthy(t)
	h.avail = 300 << 20
	check(t, h, "memory", Warn, "MemAvailable 300.0 MiB of 4096.0 MiB")
	h.avail = 10 << 20
	check(t, h, "memory", Fail, "below 64.0 MiB")
}

func TestCerts(t *testing.T) {
	h, ca := healthy(t)
	h.files[opts.Certs[0]] = cert(t, ca, now.Add(30*24*time.Hour))
	check(t, h, "certs", OK, "valid until 2026-12-30")
	h.files[opts.Certs[0]] = cert(t, ca, now.Add(time.Hour))
	check(t, h, "certs", Warn, "expires 2026-11-30T11:00:00Z")
	h.files[opts.Certs[0]] = cert(t, ca, now.Add(-time.Hour))
	check(t, h, "certs", Fail, "expired 2026-11-30T09:00:00Z")
	h.files[opts.Certs[0]] = cert(t, newSigner(t), time.Time{})
	check(t, h, "certs", Fail, "not signed by the cluster CA")
	h.files[opts.Certs[0]] = []byte("ssh-ed25519 garbage")
	check(t, h, "certs", Fail, "not an SSH certificate")
	delete(h.files, opts.Certs[0])
	check(t, h, "certs", Fail, "no SSH host certificate")
	h.files[opts.Certs[1]] = cert(t, ca, time.Time{}) // an installed node1's
	check(t, h, "certs", OK, "/etc/ssh/cert.pub: never expires")
}

func TestHeartbeats(t *testing.T) {
	h, _ := healthy(t)
	h.nodes[2].State = registry.StateDown
	h.nodes[2].LastSeen = now.Add(-time.Minute)
	r := check(t, h, "heartbeats", Warn, "1 of 2 nodes", "node3 (10.99.0.3, last seen 2026-11-30T09:59:00Z)")
	if strings.Contains(r.Detail, "node2") {
		t.Errorf("names node2, which is up: %s", r.Detail)
	}
	// A node joining for seconds is normal; for minutes, its sshd is
	// broken, and it stays out of the hostfiles.
	h.nodes[2].State = registry.StateJoining
	h.nodes[2].Registered = now.Add(-10 * time.Second)
	check(t, h, "heartbeats", OK, "all 2 nodes")
	h.nodes[2].Registered = now.Add(-5 * time.Minute)
	check(t, h, "heartbeats", Warn, "sshd does not answer", "node3 (10.99.0.3, registered 2026-11-30T09:55:00Z)")
}

func TestParsers(t *testing.T) {
	ex := ParseExportfs([]byte("/home  \t10.99.0.2(sync,wdelay,root_squash)\n/very/long/path\n\t10.99.0.3(rw) 10.99.0.4(rw)\n"))
	want := []Export{{"/home", "10.99.0.2"}, {"/very/long/path", "10.99.0.3"}, {"/very/long/path", "10.99.0.4"}}
	if len(ex) != len(want) {
		t.Fatalf("ParseExportfs: %v, want %v", ex, want)
	}
	for i := range want {
		if ex[i] != want[i] {
			t.Errorf("ParseExportfs[%d] = %v, want %v", i, ex[i], want[i])
		}
	}
	a, tot, err := ParseMemInfo([]byte("MemTotal:        4030000 kB\nMemFree: 1 kB\nMemAvailable:    2000000 kB\n"))
	if err != nil || a != 2000000<<10 || tot != 4030000<<10 {
		t.Errorf("ParseMemInfo = %d, %d, %v", a, tot, err)
	}
	if _, _, err := ParseMemInfo([]byte("MemTotal: 1 kB\n")); err == nil {
		t.Error("ParseMemInfo without MemAvailable: no error")
	}
	// 10.99.0.1:80 listening, 0.0.0.0:22 established (skipped).
	tcp := "  sl  local_address rem_address   st\n   0: 0100630A:0050 00000000:0000 0A 0\n   1: 00000000:0016 0200630A:D431 01 0\n"
	ls, err := head.ParseProcNet("tcp", []byte(tcp))
	if err != nil || len(ls) != 1 || ls[0].String() != "tcp 10.99.0.1:80" {
		t.Errorf("head.ParseProcNet(tcp) = %v, %v", ls, err)
	}
	udp := "  sl  local_address rem_address   st\n   0: 00000000:0043 00000000:0000 07 0\n"
	ls, err = head.ParseProcNet("udp", []byte(udp))
	if err != nil || len(ls) != 1 || ls[0].String() != "udp 0.0.0.0:67" {
		t.Errorf("head.ParseProcNet(udp) = %v, %v", ls, err)
	}
}

func TestListeningHere(t *testing.T) {
	// The real host's sockets parse (whatever they are).
	if _, err := HostSystem(0).Listening(); err != nil {
		t.Fatal(err)
	}
}
