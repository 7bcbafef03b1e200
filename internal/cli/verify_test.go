package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/verify"
)

func TestVerifyBadBar(t *testing.T) {
	wantAll(t, run(t, "verify", "--bar", "speed=1"), "--bar", `unknown key "speed"`, "min_bandwidth_ratio")
	wantAll(t, run(t, "verify", "--bar", "min_memory_ratio=2"), "--bar", "min_memory_ratio: 2 is outside 0..1")
	wantAll(t, run(t, "verify", "--duration", "2h"), "--duration: 2h0m0s is outside 100ms..1m")
	cfg := filepath.Join(t.TempDir(), "cluster.toml")
	if err := os.WriteFile(cfg, []byte("[verify]\nmax_latency_ratio = 0.5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantAll(t, run(t, "verify", "--config", cfg), "verify.max_latency_ratio", "0.5 is outside 1..")
}

// fakeHead serves nodes as a head's node list.
func fakeHead(t *testing.T, nodes ...registry.Node) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != registry.PathNodes {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(nodes)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestVerifyNotOnNode1(t *testing.T) {
	head := fakeHead(t, registry.Node{Name: "node1", IP: "192.0.2.1", Role: registry.RoleHead, State: registry.StateUp})
	wantAll(t, run(t, "verify", "--head", head, "--config", "", "--state-dir", t.TempDir()),
		"verify runs on node1, which holds 192.0.2.1", "no network card holds 192.0.2.1")
}

// TestVerifyOneMachine runs verify for real on a cluster of one (node1 on
// 127.0.0.1, no ssh, no MPI): it passes, prints the table, and keeps the
// report in the state folder for the head.
func TestVerifyOneMachine(t *testing.T) {
	head := fakeHead(t, registry.Node{Name: "node1", IP: "127.0.0.1", Role: registry.RoleHead, State: registry.StateUp},
		registry.Node{Name: "node7", IP: "127.0.0.7", Role: registry.RoleNode, State: registry.StateDown})
	state := t.TempDir()
	root := NewRootCommand()
	root.SetArgs([]string{"verify", "--head", head, "--no-mpi", "--state-dir", state})
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("verify: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "node1  127.0.0.1  lo") || !strings.Contains(out.String(), "PASS: 1 nodes, 0 pairs") {
		t.Errorf("verify's table:\n%s", out.String())
	}
	if !strings.Contains(errOut.String(), "node7 is down, left out") {
		t.Errorf("verify's progress does not say node7 is left out:\n%s", errOut.String())
	}
	rep, err := verify.ReadReport(filepath.Join(state, contract.VerifyFile))
	if err != nil || !rep.Pass || len(rep.Nodes) != 1 || rep.Nodes[0].Interface != "lo" || rep.Nodes[0].MTU <= 0 {
		t.Errorf("the kept report: %+v, %v", rep, err)
	}

	// Below the bar: exit 1, no message besides the report. The bar is a
	// clock offset of 1 ns, which node1's own round trip through its
	// probe (µs) always exceeds.
	root = NewRootCommand()
	root.SetArgs([]string{"verify", "--head", head, "--no-mpi", "--state-dir", state, "--json", "--bar", "max_clock_offset_s=0.000000001"})
	out.Reset()
	root.SetOut(&out)
	err = root.ExecuteContext(context.Background())
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || ee.msg != "" {
		t.Errorf("verify below the bar: %v, want exit 1 with no message", err)
	}
	var back verify.Report
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || back.Pass || len(back.Findings) != 1 || !strings.Contains(back.Findings[0].Cause, "clock") {
		t.Errorf("--json: %v, %+v", err, back)
	}
}
