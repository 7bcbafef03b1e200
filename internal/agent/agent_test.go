package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/clusterfiles"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
)

const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestOptionsFromCmdline(t *testing.T) {
	o, err := OptionsFromCmdline("console=ttyS0 clusterdebian.role=node clusterdebian.head=10.99.0.1 clusterdebian.token=abc root=/dev/nfs\n")
	if err != nil {
		t.Fatal(err)
	}
	if o.HeadURL != "http://10.99.0.1" || o.Token != "abc" || o.ClusterFilesRoot != "" {
		t.Errorf("options = %+v", o)
	}
	o, err = OptionsFromCmdline("clusterdebian.head=10.99.0.1 clusterdebian.token=abc clusterdebian.root=ram boot=live")
	if err != nil || o.ClusterFilesRoot != "/" {
		t.Errorf("RAM root: options = %+v, %v; want the cluster files written under /", o, err)
	}
	for cmdline, want := range map[string][]string{
		"clusterdebian.token=abc":      {"clusterdebian.head="},
		"clusterdebian.head=10.99.0.1": {"clusterdebian.token="},
		"quiet":                        {"clusterdebian.head=", "clusterdebian.token="},
		"clusterdebian.head=node1 clusterdebian.token=x": {"clusterdebian.head=node1", "not an IPv4"},
		"clusterdebian.head= clusterdebian.token=":       {"clusterdebian.head=", "clusterdebian.token="},
	} {
		_, err := OptionsFromCmdline(cmdline)
		if err == nil {
			t.Errorf("%q: no error", cmdline)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not name %q", cmdline, err, w)
			}
		}
	}
}

// notifySocket listens on a unixgram socket, points NOTIFY_SOCKET at it and
// returns what arrives.
func notifySocket(t *testing.T, name string) <-chan string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func TestNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("Notify without a socket: %v", err)
	}
	for _, name := range []string{
		filepath.Join(t.TempDir(), "notify"),
		fmt.Sprintf("@clusterdebian-test-%d-%d", os.Getpid(), time.Now().UnixNano()), // abstract
	} {
		ch := notifySocket(t, name)
		if err := Notify("READY=1"); err != nil {
			t.Fatalf("Notify(%s): %v", name, err)
		}
		if got := <-ch; got != "READY=1" {
			t.Errorf("socket %s got %q", name, got)
		}
	}
}

func TestReadStats(t *testing.T) {
	proc := t.TempDir()
	os.WriteFile(filepath.Join(proc, "loadavg"), []byte("1.25 0.80 0.50 2/345 6789\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "meminfo"), []byte("MemTotal:       16318480 kB\nMemFree:         1000000 kB\nMemAvailable:   12318480 kB\nBuffers:  1 kB\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "uptime"), []byte("3725.42 7000.10\n"), 0o644)
	s, err := ReadStats(proc)
	if err != nil {
		t.Fatal(err)
	}
	if s != (registry.Stats{Load1: 1.25, MemUsedKiB: 4000000, UptimeSec: 3725}) {
		t.Errorf("stats = %+v", s)
	}
	if m, err := MemTotalKiB(proc); err != nil || m != 16318480 {
		t.Errorf("MemTotalKiB = %d, %v", m, err)
	}
	os.Remove(filepath.Join(proc, "uptime"))
	if _, err := ReadStats(proc); err == nil {
		t.Error("no error without uptime")
	}
	// The real /proc parses too.
	if s, err := ReadStats("/proc"); err != nil || s.UptimeSec <= 0 || s.MemUsedKiB == 0 {
		t.Errorf("ReadStats(/proc) = %+v, %v", s, err)
	}
}

func TestLocalEndpoint(t *testing.T) {
	ep, err := LocalEndpoint(context.Background(), "http://127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	if ep.IP.String() != "127.0.0.1" || ep.Interface == "" {
		t.Errorf("endpoint to loopback = %+v", ep)
	}
	if _, err := LocalEndpoint(context.Background(), "not a url"); err == nil {
		t.Error("no error for a bad URL")
	}
}

// head is an in-process head: a registry and its API on loopback. The API
// handler can be swapped, to play a head that was remade with a new CA.
type head struct {
	reg     *registry.Registry
	ca      *sshtrust.CA
	srv     *httptest.Server
	handler atomic.Pointer[http.Handler]
	changes chan []registry.Node
}

// testNaming is the default cluster network: 10.99.0.0/24, node1 at .1.
var testNaming = contract.Naming{Subnet: netip.MustParsePrefix("10.99.0.0/24"), Head: netip.MustParseAddr("10.99.0.1")}

func newHead(t *testing.T, interval time.Duration, opts ...registry.APIOption) *head {
	t.Helper()
	return newHeadOn(t, testNaming, interval, opts...)
}

// newHeadOn serves the API of a registry for the cluster network naming.
func newHeadOn(t *testing.T, naming contract.Naming, interval time.Duration, opts ...registry.APIOption) *head {
	t.Helper()
	h := &head{changes: make(chan []registry.Node, 1024)}
	var err error
	h.reg, err = registry.Open(filepath.Join(t.TempDir(), "nodes.json"), naming, interval, func(n []registry.Node) {
		select {
		case h.changes <- n:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.reg.Flush() })
	h.ca = h.newCA(t, opts...)
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*h.handler.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// newCA makes a CA and serves the API with it.
func (h *head) newCA(t *testing.T, opts ...registry.APIOption) *sshtrust.CA {
	ca, err := sshtrust.OpenCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var api http.Handler = registry.NewAPI(h.reg, token, ca, quiet(), opts...)
	h.handler.Store(&api)
	h.ca = ca
	return ca
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitFor polls cond until it holds. It has no deadline of its own: the
// test binary's -timeout is the limit, so a slow machine cannot fail it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Failed() {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func findNode(reg *registry.Registry, mac string) (registry.Node, bool) {
	for _, n := range reg.Nodes() {
		if n.MAC == mac {
			return n, true
		}
	}
	return registry.Node{}, false
}

// agentRun is an agent that startAgent runs.
type agentRun struct {
	log       syncbuf.Buffer
	caChanges atomic.Int32 // calls of CAChanged (sshd reloads)
	cancel    context.CancelFunc
	done      chan error
}

// startAgent runs Run with o, logging to the run's log and counting
// CAChanged calls, until stop or the test's end.
func startAgent(t *testing.T, o Options) *agentRun {
	a := &agentRun{done: make(chan error, 1)}
	o.Logger = slog.New(slog.NewTextHandler(&a.log, nil))
	o.CAChanged = func(context.Context) { a.caChanges.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	t.Cleanup(cancel)
	go func() { a.done <- Run(ctx, o) }()
	return a
}

// stop ends the agent and returns what Run returned.
func (a *agentRun) stop() error {
	a.cancel()
	return <-a.done
}

// TestRunKeepsLANLease: a head that serves no addresses (proxyDHCP on a
// LAN) says so at registration, and the agent starts keeping the node's
// lease on its interface, for its address and under its name; a head that
// serves addresses gets no such keeper.
func TestRunKeepsLANLease(t *testing.T) {
	for _, proxy := range []bool{true, false} {
		var opts []registry.APIOption
		if proxy {
			opts = append(opts, registry.KeepLeases())
		}
		h := newHead(t, 100*time.Millisecond, opts...)
		type call struct {
			iface, name string
			addr        netip.Addr
		}
		calls := make(chan call, 4)
		a := startAgent(t, Options{HeadURL: h.srv.URL, Token: token, Interval: 100 * time.Millisecond, RunDir: t.TempDir(),
			MAC: "52:54:00:ab:cd:2e", IP: "10.99.0.46", Interface: "eth7",
			KeepLease: func(_ context.Context, _ *slog.Logger, iface string, addr netip.Addr, name string) {
				calls <- call{iface, name, addr}
			}})
		waitFor(t, "the node registered", func() bool { _, ok := findNode(h.reg, "52:54:00:ab:cd:2e"); return ok })
		var got []call
		if proxy {
			select {
			case c := <-calls:
				got = append(got, c)
			case <-time.After(time.Minute):
				t.Fatal("a head in proxy mode: the agent did not start keeping its lease")
			}
			if want := (call{"eth7", "node46", netip.MustParseAddr("10.99.0.46")}); got[0] != want {
				t.Errorf("kept %+v, want %+v", got[0], want)
			}
		}
		if err := a.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if !proxy && len(calls) != 0 {
			t.Errorf("a head that serves addresses: the agent kept a lease anyway: %+v", <-calls)
		}
	}
}

func TestRun(t *testing.T) {
	h := newHead(t, 200*time.Millisecond)
	ready := notifySocket(t, filepath.Join(t.TempDir(), "notify"))
	runDir := t.TempDir()
	const mac = "52:54:00:ab:cd:2a"
	a := startAgent(t, Options{HeadURL: h.srv.URL, Token: token, Interval: 200 * time.Millisecond, RunDir: runDir,
		MAC: mac, IP: "10.99.0.42"})
	caChanges, logBuf := &a.caChanges, &a.log

	// READY=1 comes once registered and the certificate is in place.
	if msg := <-ready; !strings.HasPrefix(msg, "READY=1\n") || !strings.Contains(msg, "node42") {
		t.Fatalf("notification %q", msg)
	}
	n, ok := findNode(h.reg, mac)
	if !ok || n.Name != "node42" || n.IP != "10.99.0.42" || n.State != registry.StateUp || n.MemTotalKiB == 0 || n.Cores < 1 {
		t.Fatalf("registered node: %+v (%v)", n, ok)
	}
	checkCert(t, runDir, h.ca, "node42")

	// Heartbeats carry this machine's real stats.
	waitFor(t, "a heartbeat", func() bool { n, _ := findNode(h.reg, mac); return n.UptimeSec > 0 })

	// The head forgets the node (as a head restarted without its file
	// would), and is remade with a new CA: the agent registers again on
	// the 404, installs the new certificate and has sshd reloaded.
	newCA := h.newCA(t)
	if err := h.reg.Leave(mac); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "re-registration", func() bool { _, ok := findNode(h.reg, mac); return ok })
	waitFor(t, "the new certificate", func() bool { return certSignedBy(runDir, newCA) })
	checkCert(t, runDir, newCA, "node42")
	// The agent calls CAChanged after writing the certificate: wait for it.
	waitFor(t, "sshd reloaded", func() bool { return caChanges.Load() > 0 })
	if caChanges.Load() != 1 {
		t.Errorf("CAChanged called %d times, want 1", caChanges.Load())
	}

	if err := a.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, ok := findNode(h.reg, mac); ok {
		t.Error("node still registered after the agent stopped: no leave sent")
	}
	if !strings.Contains(logBuf.String(), "registering again") {
		t.Errorf("log does not mention the re-registration:\n%s", logBuf.String())
	}
}

// TestRunWritesClusterFiles: an agent with its own root (the RAM root)
// writes /etc/hosts, the hostfiles and the known hosts from the head's node
// list, and again when a node joins.
func TestRunWritesClusterFiles(t *testing.T) {
	const rootKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDm1hn6kQd0dS5bQbJYy5d1uQmM7VRU8C0SQj6bTBd1P root@node1"
	h := newHead(t, 100*time.Millisecond, registry.RootKeys(rootKey+"\n"))
	root := t.TempDir()
	subnet := netip.MustParsePrefix("10.99.0.0/24")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			HeadURL: h.srv.URL, Token: token, Interval: 100 * time.Millisecond, RunDir: t.TempDir(),
			Logger: quiet(), MAC: "52:54:00:ab:cd:2b", IP: "10.99.0.43", ClusterFilesRoot: root, Subnet: subnet,
		})
	}()
	read := func(rel string) string {
		b, _ := os.ReadFile(filepath.Join(root, rel))
		return string(b)
	}
	// root's authorized_keys is written last.
	waitFor(t, "the cluster files", func() bool { return read("root/.ssh/authorized_keys") != "" })
	if !strings.Contains(read("etc/hosts"), "10.99.0.43\tnode43") {
		t.Errorf("/etc/hosts:\n%s", read("etc/hosts"))
	}
	if !strings.Contains(read("etc/ssh/ssh_known_hosts"), "@cert-authority node*,*.cluster,10.99.0.* "+strings.TrimSpace(h.ca.PublicKey())) {
		t.Errorf("known hosts:\n%s", read("etc/ssh/ssh_known_hosts"))
	}
	// ssh and MPI keep to the subnet of this boot, which only the run time
	// knows.
	if got := read(sshtrust.ClientConfigPath); !strings.Contains(got, "\nHost node* *.cluster 10.99.0.*\n") {
		t.Errorf("ssh client drop-in:\n%s", got)
	}
	if got := read(clusterfiles.PRRTEParamsPath); !strings.Contains(got, "\nprte_if_include = 10.99.0.0/24\n") {
		t.Errorf("PRRTE parameters:\n%s", got)
	}
	if got := read("root/.ssh/authorized_keys"); !strings.Contains(got, rootKey+"\n") {
		t.Errorf("root's authorized_keys lacks node1's root key:\n%s", got)
	}
	if fi, err := os.Stat(filepath.Join(root, "root/.ssh/authorized_keys")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("root's authorized_keys: %v, %v; want mode 0600", fi, err)
	}
	// A node joining changes the generation: the agent writes the files again.
	if _, err := h.reg.Register(registry.RegisterRequest{MAC: "52:54:00:ab:cd:2c", IP: "10.99.0.44", Cores: 3}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node44 in the MPI hostfile", func() bool { return strings.Contains(read(clusterfiles.MPIHostsPath), "node44 slots=3") })
	if _, err := os.Lstat(filepath.Join(root, "home")); err == nil {
		t.Error("the agent touched the home folders, which are node1's")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestRunFollowsNewCA: the head keeps knowing the node (its registry is
// intact) but has a new SSH CA, as after its CA key was found damaged and
// made anew. The heartbeat answer names the new CA, and the agent
// registers again: a certificate from the new CA, sshd reloaded, and the
// known hosts trust the new CA. Under the old CA the heartbeats change
// nothing.
func TestRunFollowsNewCA(t *testing.T) {
	h := newHead(t, 100*time.Millisecond)
	runDir, root := t.TempDir(), t.TempDir()
	const mac = "52:54:00:ab:cd:2d"
	a := startAgent(t, Options{HeadURL: h.srv.URL, Token: token, Interval: 100 * time.Millisecond, RunDir: runDir,
		MAC: mac, IP: "10.99.0.45", ClusterFilesRoot: root, Subnet: netip.MustParsePrefix("10.99.0.0/24")})
	caChanges, logBuf := &a.caChanges, &a.log
	knownHosts := func() string {
		b, _ := os.ReadFile(filepath.Join(root, sshtrust.KnownHostsPath))
		return string(b)
	}
	oldCA := h.ca
	waitFor(t, "the first certificate", func() bool { return certSignedBy(runDir, oldCA) })
	waitFor(t, "the known hosts", func() bool { return strings.Contains(knownHosts(), oldCA.PublicKey()) })
	registered := func() time.Time { n, _ := findNode(h.reg, mac); return n.Registered }
	first := registered()
	// Heartbeats under the same CA: no registration again.
	waitFor(t, "heartbeats", func() bool { n, _ := findNode(h.reg, mac); return n.UptimeSec > 0 })
	if got := registered(); !got.Equal(first) || caChanges.Load() != 0 {
		t.Fatalf("registered again under the same CA (%v -> %v, %d CA changes)", first, got, caChanges.Load())
	}

	newCA := h.newCA(t)
	waitFor(t, "the new certificate", func() bool { return certSignedBy(runDir, newCA) })
	checkCert(t, runDir, newCA, "node45")
	waitFor(t, "sshd reloaded", func() bool { return caChanges.Load() > 0 })
	waitFor(t, "the known hosts of the new CA", func() bool { return strings.Contains(knownHosts(), newCA.PublicKey()) })
	if strings.Contains(knownHosts(), oldCA.PublicKey()) {
		t.Errorf("the known hosts still trust the old CA:\n%s", knownHosts())
	}
	if n, ok := findNode(h.reg, mac); !ok || n.Name != "node45" {
		t.Errorf("after the new CA the node is %+v (%v), want node45", n, ok)
	}
	if err := a.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if caChanges.Load() != 1 {
		t.Errorf("CAChanged called %d times, want 1", caChanges.Load())
	}
	if !strings.Contains(logBuf.String(), "the head's SSH CA changed; registering again") {
		t.Errorf("log does not say why the agent registered again:\n%s", logBuf.String())
	}
}

// checkCert checks the certificate the agent wrote: for the host key it
// made, signed by ca, for name.
func checkCert(t *testing.T, runDir string, ca *sshtrust.CA, name string) {
	t.Helper()
	sshDir := filepath.Join(runDir, "ssh")
	certText, err := os.ReadFile(filepath.Join(sshDir, sshtrust.HostCertFile))
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(certText)
	if err != nil {
		t.Fatal(err)
	}
	cert := k.(*ssh.Certificate)
	keyText, _ := os.ReadFile(filepath.Join(sshDir, sshtrust.HostKeyFile))
	signer, err := ssh.ParsePrivateKey(keyText)
	if err != nil {
		t.Fatal(err)
	}
	caKey, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(ca.PublicKey()))
	if !bytes.Equal(cert.Key.Marshal(), signer.PublicKey().Marshal()) {
		t.Error("certificate is not for the host key in the run folder")
	}
	if !bytes.Equal(cert.SignatureKey.Marshal(), caKey.Marshal()) {
		t.Error("certificate not signed by the head's CA")
	}
	if cert.ValidPrincipals[0] != name {
		t.Errorf("principals %v", cert.ValidPrincipals)
	}
}

func certSignedBy(runDir string, ca *sshtrust.CA) bool {
	caKey, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(ca.PublicKey()))
	return certCA(filepath.Join(runDir, "ssh", sshtrust.HostCertFile)) == string(caKey.Marshal())
}

// TestRunRetriesRegistration: a head that fails at first is retried until
// it answers, and each failure is logged.
func TestRunRetriesRegistration(t *testing.T) {
	h := newHead(t, time.Second)
	var fails atomic.Int32
	api := *h.handler.Load()
	var flaky http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == registry.PathRegister && fails.Add(1) <= 2 {
			http.Error(w, `{"error":"not yet"}`, http.StatusServiceUnavailable)
			return
		}
		api.ServeHTTP(w, r)
	})
	h.handler.Store(&flaky)
	t.Setenv("NOTIFY_SOCKET", "")
	var logBuf syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{HeadURL: h.srv.URL, Token: token, RunDir: t.TempDir(),
			Logger: slog.New(slog.NewTextHandler(&logBuf, nil)), MAC: "52:54:00:00:00:07", IP: "10.99.0.7"})
	}()
	waitFor(t, "registration", func() bool { _, ok := findNode(h.reg, "52:54:00:00:00:07"); return ok })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(logBuf.String(), "registering with the head failed"); got != 2 {
		t.Errorf("%d failures logged, want 2:\n%s", got, logBuf.String())
	}
}

// TestRunStopsWhileUnregistered: with a wrong token the agent keeps retrying (the
// head may be mid-restart) and stops cleanly when told to.
func TestRunStopsWhileUnregistered(t *testing.T) {
	h := newHead(t, time.Second)
	t.Setenv("NOTIFY_SOCKET", "")
	var logBuf syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{HeadURL: h.srv.URL, Token: "wrong", RunDir: t.TempDir(),
			Logger: slog.New(slog.NewTextHandler(&logBuf, nil)), MAC: "52:54:00:00:00:08", IP: "10.99.0.8"})
	}()
	waitFor(t, "a refused registration", func() bool { return strings.Contains(logBuf.String(), "401") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(h.reg.Nodes()) != 0 {
		t.Errorf("registered with a wrong token: %v", h.reg.Nodes())
	}
}

func TestSimulate(t *testing.T) {
	h := newHeadOn(t, contract.Naming{Subnet: SimSubnet, Head: SimHead}, time.Second)
	const n = 200
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Stop once every agent registered and heartbeated at least once.
		defer cancel()
		for ctx.Err() == nil {
			ns := h.reg.Nodes()
			all := len(ns) == n
			for _, x := range ns {
				all = all && x.UptimeSec > 0
			}
			if all {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	res, err := Simulate(ctx, h.srv.URL, token, n, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("simulation: %d agents registered in %v; %d heartbeats, %d errors", res.Registered, res.Elapsed, res.Heartbeats, res.RegisterErrors+res.HeartbeatErrors+res.LeaveErrors)
	if res.Registered != n || res.RegisterErrors != 0 || res.HeartbeatErrors != 0 || res.Left != n || res.LeaveErrors != 0 || res.Heartbeats < n {
		t.Errorf("registered %d, errors %d/%d/%d (register/heartbeat/leave), left %d, heartbeats %d; first error: %s",
			res.Registered, res.RegisterErrors, res.HeartbeatErrors, res.LeaveErrors, res.Left, res.Heartbeats, res.FirstError)
	}
	seen := map[string]bool{}
	for _, name := range res.Names {
		if name == "" || seen[name] {
			t.Errorf("name %q missing or given twice", name)
		}
		seen[name] = true
	}
	if len(h.reg.Nodes()) != 0 {
		t.Errorf("%d nodes left registered after every agent left", len(h.reg.Nodes()))
	}
	if _, err := Simulate(ctx, h.srv.URL, token, 0, time.Second); err == nil {
		t.Error("Simulate with 0 agents: no error")
	}
}

func TestSimNode(t *testing.T) {
	macs, ips := map[string]bool{}, map[string]bool{}
	for i := range 1000 {
		mac, ip := SimNode(i)
		if macs[mac] || ips[ip] {
			t.Fatalf("agent %d: %s %s not unique", i, mac, ip)
		}
		macs[mac], ips[ip] = true, true
		if hw, _ := net.ParseMAC(mac); hw[0]&1 != 0 || hw[0]&2 == 0 {
			t.Errorf("%s is not a locally administered unicast MAC", mac)
		}
	}
	if mac, ip := SimNode(0); ip != "10.200.0.2" || mac != "02:cd:5e:00:00:00" {
		t.Errorf("SimNode(0) = %s %s", mac, ip)
	}
	if _, ip := SimNode(253); ip != "10.200.0.255" {
		t.Errorf("SimNode(253) = %s", ip)
	}
	if _, ip := SimNode(254); ip != "10.200.1.0" {
		t.Errorf("SimNode(254) = %s", ip)
	}
}

// TestRunInstallsSlurm: a head that runs Slurm sends its munge key to the
// registration of root on the node (the test head takes every request for
// one from the node's address and a privileged port); the agent writes
// the key for munged, owned by the munge user of the root's passwd file,
// mode 0400, and slurmd's options. When the head's key changes, the agent
// writes it again and has the daemons restarted.
func TestRunInstallsSlurm(t *testing.T) {
	root := t.TempDir()
	passwd := fmt.Sprintf("root:x:0:0::/root:/bin/sh\nmunge:x:%d:%d::/nonexistent:/usr/sbin/nologin\n", os.Getuid(), os.Getgid())
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	key1, key2 := []byte(strings.Repeat("1", 64)), []byte(strings.Repeat("2", 64))
	h := newHead(t, 100*time.Millisecond, registry.Slurm(key1, "10.99.0.1"))
	asRoot := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.RemoteAddr = "10.99.0.45:700"
			next.ServeHTTP(w, r)
		})
	}
	api := asRoot(registry.NewAPI(h.reg, token, h.ca, quiet(), registry.Slurm(key1, "10.99.0.1")))
	h.handler.Store(&api)
	var restarts atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			HeadURL: h.srv.URL, Token: token, Interval: 100 * time.Millisecond, RunDir: t.TempDir(),
			Logger: quiet(), MAC: "52:54:00:ab:cd:2d", IP: "10.99.0.45", SlurmRoot: root,
			SlurmChanged: func(context.Context) { restarts.Add(1) },
		})
	}()
	keyPath := filepath.Join(root, contract.MungeRunKey)
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	waitFor(t, "the munge key", func() bool { return read(keyPath) == string(key1) })
	fi, err := os.Stat(keyPath)
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("munge key: %v, %v; want mode 0400", fi, err)
	}
	if fi, err := os.Stat(filepath.Dir(keyPath)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("munge key folder: %v, %v; want mode 0700", fi, err)
	}
	env := read(filepath.Join(root, contract.SlurmdEnvFile))
	for _, want := range []string{"SLURMD_NODENAME=node45\n", "SLURMD_CONF_SERVER=10.99.0.1\n", fmt.Sprintf("SLURMD_CONF=\"Feature=clusterdebian CPUs=%d\"\n", runtime.NumCPU())} {
		if !strings.Contains(env, want) {
			t.Errorf("slurmd's options lack %q:\n%s", want, env)
		}
	}
	first := restarts.Load()

	// The head's key changes (its state was lost); it forgets the node,
	// which registers again and gets the new key.
	api = asRoot(registry.NewAPI(h.reg, token, h.ca, quiet(), registry.Slurm(key2, "10.99.0.1")))
	h.handler.Store(&api)
	if err := h.reg.Leave("52:54:00:ab:cd:2d"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new munge key", func() bool { return read(keyPath) == string(key2) })
	waitFor(t, "munge and slurmd restarted", func() bool { return restarts.Load() > first })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestOptionsFromCmdlineSwarm(t *testing.T) {
	sums := map[string]string{contract.BaseLayer: strings.Repeat("0a", 32)}
	c := contract.Cmdline{Node: true, Head: netip.MustParseAddr("10.99.0.1"), Token: "t", Root: contract.RootRAM, LayerSums: sums, Swarm: true}
	o, err := OptionsFromCmdline(c.Format())
	if err != nil || o.SwarmSums[contract.BaseLayer] != sums[contract.BaseLayer] {
		t.Fatalf("swarm on: %+v, %v; want node1's sums to serve by", o.SwarmSums, err)
	}
	// Swarm off, or the shared root: the agent serves nothing.
	c.Swarm = false
	if o, _ := OptionsFromCmdline(c.Format()); o.SwarmSums != nil {
		t.Errorf("swarm off: the agent would serve %v", o.SwarmSums)
	}
	c.Swarm, c.Root = true, contract.RootShared
	if o, _ := OptionsFromCmdline(c.Format()); o.SwarmSums != nil {
		t.Errorf("shared root: the agent would serve %v", o.SwarmSums)
	}
}

// fakeSSHD listens on addr; until answer is set it accepts and hangs up
// without an identification line, as a port that is not yet sshd's.
type fakeSSHD struct {
	ln     net.Listener
	answer atomic.Bool
}

func startFakeSSHD(t *testing.T, addr string) *fakeSSHD {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSSHD{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if s.answer.Load() {
				io.WriteString(c, "SSH-2.0-OpenSSH_fake\r\n")
			}
			c.Close()
		}
	}()
	return s
}

// TestRunJoiningUntilSSH: an agent that waits for sshd registers the node
// as joining, keeps it joining through heartbeats while the port answers
// without an SSH line, and makes it up as soon as sshd answers.
func TestRunJoiningUntilSSH(t *testing.T) {
	// The node's own address must be where the fake sshd listens: all of
	// 127/8 is this machine's.
	naming := contract.Naming{Subnet: netip.MustParsePrefix("127.0.0.0/24"), Head: netip.MustParseAddr("127.0.0.1")}
	h := newHeadOn(t, naming, 50*time.Millisecond)
	sshd := startFakeSSHD(t, "127.0.0.47:0")
	port := sshd.ln.Addr().(*net.TCPAddr).Port
	const mac = "52:54:00:ab:cd:2f"
	a := startAgent(t, Options{HeadURL: h.srv.URL, Token: token, Interval: 50 * time.Millisecond, RunDir: t.TempDir(),
		MAC: mac, IP: "127.0.0.47", SSHPort: port})
	waitFor(t, "the node registered", func() bool { _, ok := findNode(h.reg, mac); return ok })
	n, _ := findNode(h.reg, mac)
	if n.State != registry.StateJoining || n.Name != "node47" {
		t.Fatalf("registered as %s/%s, want node47/joining", n.Name, n.State)
	}
	// Heartbeats go on (uptime comes only with them), and the node stays
	// joining: the port takes connections, but sends no SSH line.
	waitFor(t, "heartbeats", func() bool { n, _ := findNode(h.reg, mac); return n.UptimeSec > 0 })
	seen := n.LastSeen
	waitFor(t, "more heartbeats", func() bool { n, _ := findNode(h.reg, mac); return n.LastSeen.After(seen) })
	if n, _ := findNode(h.reg, mac); n.State != registry.StateJoining {
		t.Fatalf("before sshd answers: %s, want joining", n.State)
	}
	sshd.answer.Store(true)
	waitFor(t, "the node up", func() bool { n, _ := findNode(h.reg, mac); return n.State == registry.StateUp })
	// Registering again (the head forgot the node) comes back up at once:
	// sshd has answered already.
	if err := h.reg.Leave(mac); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "re-registration", func() bool { _, ok := findNode(h.reg, mac); return ok })
	if n, _ := findNode(h.reg, mac); n.State != registry.StateUp {
		t.Errorf("registered again as %s, want up", n.State)
	}
	if err := a.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if !strings.Contains(a.log.String(), "sshd answers") {
		t.Errorf("the log does not say that sshd answered:\n%s", a.log.String())
	}
}

// TestSSHAnswers: only a server that sends its SSH line answers; other
// lines may come first (RFC 4253 section 4.2).
func TestSSHAnswers(t *testing.T) {
	for _, c := range []struct {
		greeting string
		ok       bool
	}{
		{"SSH-2.0-OpenSSH_9.2\r\n", true},
		{"hello\r\nSSH-2.0-x\r\n", true},
		{"HTTP/1.1 400 Bad Request\r\n\r\n", false},
		{"", false},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c2, err := ln.Accept()
			if err == nil {
				io.WriteString(c2, c.greeting)
				c2.Close()
			}
		}()
		err = sshAnswers(context.Background(), ln.Addr().String())
		ln.Close()
		if (err == nil) != c.ok {
			t.Errorf("greeting %q: %v, want answered=%v", c.greeting, err, c.ok)
		}
	}
}
