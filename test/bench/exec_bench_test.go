//go:build bench

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/hosttools"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
	"github.com/clusterdebian/clusterdebian/internal/testsshd"
)

// execSubnet holds the simulated nodes: node<N> at .N, the head at .1.
var execSubnet = netip.MustParsePrefix("10.96.0.0/24")

// execSizes are the cluster sizes timed; the largest must fit the subnet
// (nodes .2 to .251).
var execSizes = []int{10, 50, 250}

// execRounds is how many times exec and pdsh run per size; the median
// counts.
const execRounds = 3

// serialMax is the largest size the serial ssh loop runs at: its time only
// grows linearly (about half a second per node here), and at 250 nodes it
// would take minutes to say just that.
const serialMax = 50

// TestExecBenchmark prints the time `clusterdebian exec` takes to run
// `true` on 10, 50 and 250 simulated nodes, against pdsh (ssh module, same
// fanout) and, up to serialMax nodes, a serial loop of ssh, on the same
// nodes in the same run.
//
// Each simulated node is a real sshd with its own host key, certified by a
// cluster CA for the node's name and address, as on a cluster. They all
// listen on port 22 of their own address in one network namespace, where
// /etc/hosts names them and /etc/ssh/ssh_config logs in as root with a test
// key and trusts the CA (ip netns exec puts /etc/netns/NAME/ over /etc).
// The node list `exec` asks the head for is served from this process, in
// the namespace. Every client runs inside the namespace, so all three pay
// the same ip netns exec once per run.
func TestExecBenchmark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err := netns.Check(); err != nil {
		t.Skip(err)
	}
	testsshd.Require(t)
	var need []hosttools.Tool
	for _, tool := range hosttools.Tools {
		if tool.Name == "pdsh" || tool.Name == "sshd" {
			need = append(need, tool)
		}
	}
	if err := hosttools.Require(need); err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t, t.TempDir())
	ctx := context.Background()
	ns, err := netns.New(ctx, netns.UniqueName(netns.TestPrefix+"ex"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Delete(context.Background()) })
	// A local route makes every address of the subnet this namespace's
	// own, so that each sshd can listen on its node's address without an
	// address per node.
	if err := ns.IP(ctx, "route", "add", "local", execSubnet.String(), "dev", "lo"); err != nil {
		t.Fatal(err)
	}

	maxN := slices.Max(execSizes)
	dir := t.TempDir()
	etc := setupExecEtc(t, ns, dir, maxN)
	wrap := []string{"ip", "netns", "exec", ns.Name}
	ca, err := sshtrust.OpenCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "ssh", "ssh_known_hosts"),
		[]byte(ca.KnownHostsLine(sshtrust.KnownHostsPatterns(execSubnet))+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The node list is served before any sshd starts: opening its listener
	// ends a thread (netns.Do), and an sshd forked from that thread would
	// get its parent-death signal.
	start := time.Now()
	nodes := make([]registry.Node, maxN)
	for i := range nodes {
		name, ip := execNode(i)
		nodes[i] = registry.Node{Name: name, IP: ip, Role: registry.RoleNode, Cores: 1,
			State: registry.StateUp, Registered: start, LastSeen: start}
	}
	headURL := serveNodeList(t, ns, nodes)
	for i := range maxN {
		name, ip := execNode(i)
		keyDir := filepath.Join(dir, name)
		pub, err := sshtrust.NewHostKey(keyDir)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.SignHost(pub, sshtrust.HostPrincipals(name, ip), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(keyDir, sshtrust.HostCertFile), []byte(cert+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		testsshd.Start(t, testsshd.Config{Dir: keyDir, Address: ip, Port: 22,
			HostKey: filepath.Join(keyDir, sshtrust.HostKeyFile), HostCertificate: filepath.Join(keyDir, sshtrust.HostCertFile),
			AuthorizedKeys: filepath.Join(dir, "authorized_keys"), Wrap: wrap})
	}
	t.Logf("%d sshds up in %.1f s", maxN, time.Since(start).Seconds())

	// Each tool runs in the namespace; a run counts only if every node ran
	// the command.
	run := func(name string, args ...string) (time.Duration, []byte) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		cmd := ns.Command(cctx, name, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out.String()))
		}
		return d, out.Bytes()
	}
	ours := func(n int, argv ...string) (time.Duration, []byte) {
		return run(bin, append([]string{"exec", "--head", headURL, "-w", execHosts(n), "--"}, argv...)...)
	}
	// pdsh's default fanout is 32; ours is 64. Both run at 64, to compare
	// the tools rather than their defaults. -S: exit with the worst
	// remote exit code, so that a failed node fails the run.
	pdsh := func(n int, argv ...string) (time.Duration, []byte) {
		return run("pdsh", append([]string{"-R", "ssh", "-f", fmt.Sprint(pexec.DefaultFanout), "-S", "-w", execHosts(n)}, argv...)...)
	}
	serial := func(n int, argv ...string) (time.Duration, []byte) {
		var names []string
		for i := range n {
			name, _ := execNode(i)
			names = append(names, name)
		}
		// BatchMode, as exec sets it: a prompt would hang, not fail. The
		// prefix (a shell builtin) labels one-line outputs by node.
		script := `for h in ` + strings.Join(names, " ") + `; do printf '%s: ' "$h"; ssh -o BatchMode=yes "$h" ` +
			strings.Join(argv, " ") + ` || exit 1; done`
		return run("sh", "-c", script)
	}

	// First every tool once with a command that answers, to check the
	// setup (each node reached, as itself: its certificate names it) and
	// to warm the caches. The timed runs then only need to succeed.
	tools := []struct {
		name string
		run  func(int, ...string) (time.Duration, []byte)
	}{{"exec", ours}, {"pdsh", pdsh}, {"serial ssh", serial}}
	for _, tool := range tools {
		n := execSizes[0]
		_, out := tool.run(n, "echo", "ok")
		for i := range n {
			name, _ := execNode(i)
			if !bytes.Contains(append([]byte("\n"), out...), []byte("\n"+name+": ok\n")) {
				t.Fatalf("%s: no \"%s: ok\" line in:\n%s", tool.name, name, tail(string(out)))
			}
		}
	}

	// exec and pdsh take turns going first, so that neither always meets
	// the caches the other left. The serial loop, far slower, runs once,
	// up to serialMax nodes.
	type row struct {
		ours, pdsh []time.Duration
		serial     time.Duration
	}
	rows := make([]row, len(execSizes))
	for i, n := range execSizes {
		for round := range execRounds {
			first, second := &rows[i].ours, &rows[i].pdsh
			f1, f2 := ours, pdsh
			if round%2 == 1 {
				first, second, f1, f2 = second, first, f2, f1
			}
			d, _ := f1(n, "true")
			*first = append(*first, d)
			d, _ = f2(n, "true")
			*second = append(*second, d)
		}
		if n <= serialMax {
			rows[i].serial, _ = serial(n, "true")
		}
	}

	fmt.Printf("\nexec: `true` on N simulated nodes (one sshd each, host certificates, one namespace)\n")
	fmt.Printf("  exec and pdsh: median of %d runs at fanout %d; serial ssh: one run, up to %d nodes\n",
		execRounds, pexec.DefaultFanout, serialMax)
	fmt.Printf("  %5s  %12s  %12s  %8s  %12s  %8s\n", "N", "exec", "pdsh", "ratio", "serial ssh", "ratio")
	for i, n := range execSizes {
		o, p, s := median(rows[i].ours), median(rows[i].pdsh), rows[i].serial
		line := fmt.Sprintf("  %5d  %10.2f s  %10.2f s  %8.2f", n, o.Seconds(), p.Seconds(), o.Seconds()/p.Seconds())
		if s > 0 {
			line += fmt.Sprintf("  %10.2f s  %8.2f", s.Seconds(), o.Seconds()/s.Seconds())
		}
		fmt.Println(line)
	}
	fmt.Printf("  ratio: exec's time over the reference's (below 1: exec is faster)\n")
}

// execNode is simulated node i: node2 at .2, and so on.
func execNode(i int) (name, ip string) {
	a := execSubnet.Addr().As4()
	a[3] = byte(i + 2)
	return fmt.Sprintf("node%d", i+2), netip.AddrFrom4(a).String()
}

// execHosts is the host list of the first n simulated nodes, which both
// exec and pdsh read.
func execHosts(n int) string { return fmt.Sprintf("node[2-%d]", n+1) }

// setupExecEtc writes the namespace's /etc/hosts, /etc/passwd and
// /etc/ssh (removed when the test ends), a user key for root authorized on
// every node, and returns the namespace's etc folder.
func setupExecEtc(t *testing.T, ns *netns.NS, dir string, n int) string {
	t.Helper()
	parent := "/etc/netns"
	_, err := os.Stat(parent)
	madeParent := errors.Is(err, fs.ErrNotExist)
	etc := filepath.Join(parent, ns.Name)
	if err := os.MkdirAll(filepath.Join(etc, "ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(etc)
		if madeParent {
			os.Remove(parent)
		}
	})
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1 localhost\n")
	fmt.Fprintf(&hosts, "%s node1\n", execSubnet.Addr().Next())
	for i := range n {
		name, ip := execNode(i)
		fmt.Fprintf(&hosts, "%s %s\n", ip, name)
	}
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte(hosts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// root's home and shell, for the sshds and the clients alike: an
	// empty home and sh, so that neither this machine's ~/.ssh nor its
	// shell start-up files (a slow .bashrc costs more than the whole ssh
	// session) weigh on the figures.
	home := filepath.Join(dir, "root")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(passwd), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "root:") {
			lines[i] = "root:x:0:0:root:" + home + ":/bin/sh"
		}
	}
	if err := os.WriteFile(filepath.Join(etc, "passwd"), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id_ed25519")
	pub := testsshd.KeyPair(t, key)
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The cluster's trust, as a node has it, and nothing of this
	// machine's: no user known_hosts, so no host key is taken on trust.
	conf := fmt.Sprintf(`Host *
	User root
	IdentityFile %s
	IdentitiesOnly yes
	GlobalKnownHostsFile %s
	UserKnownHostsFile /dev/null
	StrictHostKeyChecking yes
	LogLevel ERROR
`, key, filepath.Join("/etc/ssh", "ssh_known_hosts"))
	if err := os.WriteFile(filepath.Join(etc, "ssh", "ssh_config"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return etc
}

// serveNodeList serves nodes as the head's node list on the head's address
// inside ns, and returns the URL exec takes. The listener is opened in the
// namespace; the server runs in this process.
func serveNodeList(t *testing.T, ns *netns.NS, nodes []registry.Node) string {
	t.Helper()
	body, err := json.Marshal(nodes)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(execSubnet.Addr().Next().String(), "80")
	var l net.Listener
	if err := ns.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+registry.PathNodes, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + addr
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
