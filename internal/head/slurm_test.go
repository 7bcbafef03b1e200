package head

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
)

// fakeSlurm is a slurmctld that knows nodes, and records what it is told.
type fakeSlurm struct {
	nodes []slurm.NodeState
	calls []string
}

func (f *fakeSlurm) Nodes(context.Context) ([]slurm.NodeState, error) {
	return slices.Clone(f.nodes), nil
}
func (f *fakeSlurm) Jobs(context.Context) ([]slurm.Job, error) {
	return []slurm.Job{{ID: "5", State: "RUNNING"}}, nil
}
func (f *fakeSlurm) Update(_ context.Context, nodes []string, state, _ string) error {
	f.calls = append(f.calls, "update "+strings.Join(nodes, ",")+" "+state)
	return nil
}
func (f *fakeSlurm) Delete(_ context.Context, nodes []string) error {
	f.calls = append(f.calls, "delete "+strings.Join(nodes, ","))
	f.nodes = slices.DeleteFunc(f.nodes, func(n slurm.NodeState) bool { return slices.Contains(nodes, n.Name) })
	return nil
}
func (f *fakeSlurm) restart(_ context.Context, units ...string) error {
	f.calls = append(f.calls, "restart "+strings.Join(units, ","))
	return nil
}
func (f *fakeSlurm) Cancel(context.Context, []string) error { return nil }
func (f *fakeSlurm) Reconfigure(context.Context) error      { return nil }

// slurmHead is a head with a registry and the Slurm part set up on a
// stand-in root that has a munge user.
func slurmHead(t *testing.T, node1Jobs bool) (*Head, *fakeSlurm, string) {
	t.Helper()
	root, state := t.TempDir(), t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), fmt.Appendf(nil, "munge:x:%d:%d::/:/bin/false\n", os.Getuid(), os.Getgid()), 0o644))
	reg, err := registry.Open(filepath.Join(state, contract.RegistryFile), testNaming, time.Second, nil)
	must(t, err)
	t.Cleanup(func() { reg.Flush() })
	f := &fakeSlurm{}
	h := &Head{opts: Options{StateDir: state, ClusterRoot: root,
		Slurm: &SlurmOptions{Version: slurm.Version{Major: 24, Minor: 11}, Node1Jobs: node1Jobs, Controller: f, Restart: f.restart}},
		addr: testNaming.Head, naming: testNaming, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		cluster: &cluster{reg: reg}}
	if _, err := h.setupSlurm(root); err != nil {
		t.Fatal(err)
	}
	return h, f, root
}

// TestSetupSlurm: the head writes slurm.conf with node1 as the controller,
// keeps the munge key in its state folder and gives node1's munged a copy,
// and has node1's slurmd register unless node1 runs no jobs.
func TestSetupSlurm(t *testing.T) {
	h, _, root := slurmHead(t, true)
	read := func(p string) string { b, _ := os.ReadFile(filepath.Join(root, p)); return string(b) }
	if conf := read(slurm.ConfPath); !strings.Contains(conf, "SlurmctldHost=node1(10.99.0.1)\n") {
		t.Errorf("slurm.conf:\n%s", conf)
	}
	key, err := os.ReadFile(filepath.Join(h.opts.StateDir, contract.MungeKeyFile))
	if err != nil || read(contract.MungeRunKey) != string(key) {
		t.Errorf("node1's munge key is not the state folder's (%v)", err)
	}
	if env := read(contract.SlurmdEnvFile); !strings.Contains(env, "SLURMD_NODENAME=node1\n") || !strings.Contains(env, "SLURMD_CONF_SERVER=10.99.0.1\n") {
		t.Errorf("node1's slurmd options:\n%s", env)
	}
	if st := h.SlurmStatus(); !st.Enabled {
		t.Error("SlurmStatus not enabled")
	}

	_, _, root = slurmHead(t, false)
	if _, err := os.Stat(filepath.Join(root, contract.SlurmdEnvFile)); !os.IsNotExist(err) {
		t.Errorf("slurm.node1_jobs = false, and node1's slurmd has options: %v", err)
	}
}

// TestSlurmFollowsRegistry: a node the registry marks down goes down in
// Slurm, one it does not know is deleted, a pruned one is deleted at
// once; the status (GET /api/v1/slurm) shows what Slurm said.
func TestSlurmFollowsRegistry(t *testing.T) {
	h, f, _ := slurmHead(t, true)
	reg := h.cluster.reg
	for _, ip := range []string{"10.99.0.2", "10.99.0.3"} {
		_, err := reg.Register(registry.RegisterRequest{MAC: "52:54:00:00:00:0" + ip[len(ip)-1:], IP: ip, Cores: 2})
		must(t, err)
	}
	reg.Sweep(time.Now().Add(time.Hour)) // both silent: down
	_, err := reg.Register(registry.RegisterRequest{MAC: "52:54:00:00:00:03", IP: "10.99.0.3", Cores: 2})
	must(t, err)
	f.nodes = []slurm.NodeState{{Name: "node2", State: "idle"}, {Name: "node3", State: "idle"}, {Name: "node9", State: "down*"}}
	h.syncSlurm(context.Background())
	if want := []string{"update node2,node9 down", "delete node9"}; !slices.Equal(f.calls, want) {
		t.Errorf("Slurm told %q, want %q", f.calls, want)
	}
	st := h.SlurmStatus()
	if len(st.Nodes) != 3 || len(st.Jobs) != 1 || st.Error != "" {
		t.Errorf("status %+v", st)
	}

	f.calls = nil
	h.slurmPruned([]registry.Node{{Name: "node2"}, {Name: "node7"}})
	if want := []string{"update node2 down", "delete node2"}; !slices.Equal(f.calls, want) {
		t.Errorf("prune: Slurm told %q, want %q (node7 is not Slurm's)", f.calls, want)
	}

	rec := httptest.NewRecorder()
	h.serveSlurm(rec, httptest.NewRequest(http.MethodGet, slurm.PathStatus, nil))
	var got slurm.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || !got.Enabled || len(got.Nodes) != 3 {
		t.Errorf("GET %s: %d %s (%v)", slurm.PathStatus, rec.Code, rec.Body, err)
	}

	// /metrics carries Slurm's figures after the nodes'.
	h.handler = http.NotFoundHandler()
	rec = httptest.NewRecorder()
	h.routes().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{"clusterdebian_slurm_up 1\n", `clusterdebian_slurm_node_state{node="node3",state="idle"} 1` + "\n", `clusterdebian_slurm_jobs{state="running"} 1` + "\n"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, rec.Body)
		}
	}
}

// TestSetupSlurmAddressMoved: a head started again with the same address
// leaves Slurm's daemons alone; one started at another address (node1's
// lease moved on a LAN) rewrites slurm.conf and node1's slurmd options
// and restarts the daemons, which read them only at their start.
func TestSetupSlurmAddressMoved(t *testing.T) {
	h, f, root := slurmHead(t, true)
	read := func(p string) string { b, _ := os.ReadFile(filepath.Join(root, p)); return string(b) }
	if len(f.calls) != 0 {
		t.Errorf("first start: %q, want no restart (nothing ran before)", f.calls)
	}
	h.slurm = nil
	if _, err := h.setupSlurm(root); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 0 {
		t.Errorf("started again at the same address: %q, want no restart", f.calls)
	}

	h.addr = netip.MustParseAddr("10.99.0.77")
	h.slurm = nil
	if _, err := h.setupSlurm(root); err != nil {
		t.Fatal(err)
	}
	if conf := read(slurm.ConfPath); !strings.Contains(conf, "SlurmctldHost=node1(10.99.0.77)\n") {
		t.Errorf("slurm.conf not rewritten for the new address:\n%s", conf)
	}
	if env := read(contract.SlurmdEnvFile); !strings.Contains(env, "SLURMD_CONF_SERVER=10.99.0.77\n") {
		t.Errorf("node1's slurmd options not rewritten:\n%s", env)
	}
	if want := []string{"restart slurmctld.service,slurmd.service"}; !slices.Equal(f.calls, want) {
		t.Errorf("at a new address: %q, want %q", f.calls, want)
	}
}

// TestSetupSlurmKeepsForeignConf: a slurm.conf the head did not write (a
// permanent node1 with a Slurm of its own) is kept, and the head runs no
// Slurm; its own from an earlier start is rewritten.
func TestSetupSlurmKeepsForeignConf(t *testing.T) {
	h, _, root := slurmHead(t, true)
	conf := filepath.Join(root, slurm.ConfPath)
	h.slurm = nil
	if _, err := h.setupSlurm(root); err != nil || h.slurm == nil {
		t.Fatalf("its own slurm.conf again: %v", err)
	}
	mine := "ClusterName=lab\nSlurmctldHost=server\n"
	must(t, os.WriteFile(conf, []byte(mine), 0o644))
	h.slurm = nil
	if _, err := h.setupSlurm(root); err == nil || !strings.Contains(err.Error(), conf) || h.slurm != nil {
		t.Errorf("foreign slurm.conf: %v, Slurm part %v; want an error naming %s", err, h.slurm, conf)
	}
	if got, _ := os.ReadFile(conf); string(got) != mine {
		t.Errorf("the foreign slurm.conf was changed:\n%s", got)
	}
}
