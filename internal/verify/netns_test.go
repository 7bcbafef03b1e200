package verify

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/netns"
)

// TestRunInNamespaces measures three "nodes", each in a network namespace
// of its own on one bridge, every port shaped by tc to 200 Mbit/s towards
// its node (as a switch port would be): verify passes. Then node3's port is
// shaped to 20 Mbit/s, as the e2e test does to a VM's tap: verify names
// node3, slow with every partner, and nothing else.
func TestRunInNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and tc")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mkNS := func(name string) *netns.NS {
		ns, err := netns.New(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Delete(context.Background()) })
		return ns
	}
	sw := mkNS(netns.UniqueName("cdvsw"))
	if err := sw.AddBridge(ctx, "br0", netip.MustParsePrefix("10.77.0.254/24")); err != nil {
		t.Fatal(err)
	}
	dialIn := func(ns *netns.NS) Dialer {
		return func(ctx context.Context, addr string) (c net.Conn, err error) {
			err = ns.Do(func() error {
				var d net.Dialer
				c, err = d.DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		}
	}
	// The shaped rates sit well below what a busy 2-core machine moves
	// through a veth, so that the links, not the CPU, set every pair's
	// rate (at 200mbit, a machine booting VMs measured one pair at 81).
	const rateAll, rateSlow = "50mbit", "5mbit"
	shape := func(port, rate string) {
		out, err := exec.Command("ip", "netns", "exec", sw.Name, "tc", "qdisc", "replace", "dev", port, "root",
			"tbf", "rate", rate, "burst", "32k", "latency", "50ms").CombinedOutput()
		if err != nil {
			t.Fatalf("tc on %s: %v: %s", port, err, out)
		}
	}
	var nodes []Node
	const token = "t0ken"
	for i := 1; i <= 3; i++ {
		ns := mkNS(netns.UniqueName("cdvn"))
		port := fmt.Sprintf("port%d", i)
		if err := netns.AddVeth(ctx, ns, "eth0", sw, port); err != nil {
			t.Fatal(err)
		}
		if err := sw.SetMaster(ctx, port, "br0"); err != nil {
			t.Fatal(err)
		}
		ip := fmt.Sprintf("10.77.0.%d", i)
		if err := ns.AddAddr(ctx, "eth0", netip.MustParsePrefix(ip+"/24")); err != nil {
			t.Fatal(err)
		}
		shape(port, rateAll)
		var ln net.Listener
		if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", ip+":0"); return err }); err != nil {
			t.Fatal(err)
		}
		p := &Probe{Token: token, Dial: dialIn(ns), Facts: func() (Facts, error) {
			return Facts{Interface: "eth0", MTU: 1500, Cores: 1, MemTotalKiB: 1 << 20}, nil
		}}
		pctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { p.Serve(pctx, ln, time.Minute); close(done) }()
		t.Cleanup(func() { stop(); <-done })
		nodes = append(nodes, Node{Name: fmt.Sprintf("node%d", i), Addr: ln.Addr().String()})
	}
	o := Options{Duration: 500 * time.Millisecond, Dial: dialIn(sw)}
	report := func(r *Report) string {
		var b strings.Builder
		WriteTable(&b, r)
		return b.String()
	}

	r := Run(ctx, nodes, token, DefaultBar(), o)
	t.Logf("every port at %s:\n%s", rateAll, report(r))
	if !r.Pass || len(r.Links) != 3 || r.Rounds != 3 {
		t.Errorf("every port at %s: pass %v, %d links, %d rounds", rateAll, r.Pass, len(r.Links), r.Rounds)
	}

	shape("port3", rateSlow)
	r = Run(ctx, nodes, token, DefaultBar(), o)
	t.Logf("node3's port at %s:\n%s", rateSlow, report(r))
	if r.Pass || len(r.Findings) != 1 || r.Findings[0].Node != "node3" || r.Findings[0].Peer != "" ||
		!strings.Contains(r.Findings[0].Cause, "slow with every partner") {
		t.Errorf("node3 at %s: want one finding, node3 slow with every partner; got %+v", rateSlow, r.Findings)
	}
}
