//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/verify"
)

// checkVerify is TestVirtualCluster's "verify" step: `clusterdebian verify`
// on node1 passes on the cluster as it is, and with slow's link shaped to
// 20 Mbit/s by tc on its tap (traffic into the VM), it names slow as slow
// with every partner and exits non-zero. The shaping is removed when the
// step ends, also on failure.
func checkVerify(t *testing.T, ctx context.Context, c vcluster, nodes []registry.Node, slow string) {
	g := c.on("node1")
	start := time.Now()
	out, code := g.Try(t, ctx, "clusterdebian verify")
	t.Logf("clusterdebian verify (exit %d, %.0f s):\n%s", code, time.Since(start).Seconds(), out)
	if code != 0 {
		t.Errorf("verify on the unshaped cluster: exit %d, want 0", code)
	}
	for _, n := range nodes {
		if !regexp.MustCompile(`(?m)^` + n.Name + `\s+` + regexp.QuoteMeta(n.IP) + `\s`).MatchString(out) {
			t.Errorf("verify's table lacks %s (%s)", n.Name, n.IP)
		}
	}
	// The head keeps the report: /api/v1/verify, and /metrics.
	raw := headGet(t, ctx, g, verify.PathReport)
	var rep verify.Report
	if err := json.Unmarshal([]byte(raw), &rep); err != nil {
		t.Fatalf("%s: %v:\n%s", verify.PathReport, err, raw)
	}
	if !rep.Pass || len(rep.Nodes) != len(nodes) || len(rep.Links) != len(nodes)*(len(nodes)-1)/2 || rep.MPI == nil || !rep.MPI.OK {
		t.Errorf("the kept report: pass %v, %d nodes, %d links, MPI %+v", rep.Pass, len(rep.Nodes), len(rep.Links), rep.MPI)
	}
	if m := headGet(t, ctx, g, "/metrics"); !strings.Contains(m, "clusterdebian_verify_pass 1\n") {
		t.Errorf("/metrics lacks clusterdebian_verify_pass 1")
	}

	// Shape slow's tap: what the bridge sends into its VM.
	n, ok := byName(nodes, slow)
	if !ok {
		t.Fatalf("no node %s", slow)
	}
	tap := ""
	for _, v := range c.VMs {
		if strings.EqualFold(v.MAC, n.MAC) {
			tap = v.Tap
		}
	}
	if tap == "" {
		t.Fatalf("no VM has %s's MAC %s", slow, n.MAC)
	}
	tc := func(args ...string) error {
		out, err := exec.Command("ip", append([]string{"netns", "exec", c.NetNS, "tc", "qdisc"}, args...)...).CombinedOutput()
		if err != nil {
			t.Logf("tc qdisc %v: %v: %s", args, err, out)
		}
		return err
	}
	if err := tc("add", "dev", tap, "root", "tbf", "rate", "20mbit", "burst", "32k", "latency", "50ms"); err != nil {
		t.Fatal("shaping the link failed")
	}
	t.Cleanup(func() {
		if err := tc("del", "dev", tap, "root"); err != nil {
			t.Errorf("removing the shaping of %s: %v", tap, err)
		}
	})
	start = time.Now()
	out, code = g.Try(t, ctx, "clusterdebian verify")
	t.Logf("clusterdebian verify with %s (%s) at 20 Mbit/s (exit %d, %.0f s):\n%s", slow, tap, code, time.Since(start).Seconds(), out)
	if code == 0 {
		t.Errorf("verify with %s shaped to 20 Mbit/s: exit 0, want non-zero", slow)
	}
	if !regexp.MustCompile(`(?m)^BELOW THE BAR: ` + slow + `: .*slow with every partner: node's link`).MatchString(out) {
		t.Errorf("verify with %s shaped does not name %s as slow with every partner", slow, slow)
	}
}

// headGet is the body of GET path from node1's head, on g (node1), which
// has no curl.
func headGet(t *testing.T, ctx context.Context, g testsupport.Guest, path string) string {
	t.Helper()
	raw := g.Sh(t, ctx, `exec 3<>/dev/tcp/127.0.0.1/80
printf 'GET `+path+` HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
cat <&3`)
	_, body, _ := strings.Cut(raw, "\r\n\r\n")
	return body
}
