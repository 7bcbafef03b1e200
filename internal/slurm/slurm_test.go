package slurm

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]Version{
		"slurm-wlm 24.11.5\n": {24, 11},
		"slurm 22.05.8":       {22, 5},
		"slurm 23.02":         {23, 2},
	} {
		got, err := ParseVersion(in)
		if err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseVersion("slurmctld: command not found"); err == nil {
		t.Error("ParseVersion of no version: no error")
	}
	if !(Version{22, 5}).Less(Version{24, 11}) || (Version{24, 11}).Less(Version{24, 11}) {
		t.Error("Less is wrong")
	}
}

// TestConfFiles: the configuration is configless, with node1 as the
// controller at its address, one default partition of every node, and
// room for the subnet's hosts; each release gets what it needs.
func TestConfFiles(t *testing.T) {
	base := Conf{Controller: "node1", ControllerAddr: netip.MustParseAddr("10.99.0.1"),
		Subnet: netip.MustParsePrefix("10.99.0.0/24")}
	common := []string{"ClusterName=clusterdebian\n", "SlurmctldHost=node1(10.99.0.1)\n",
		"SlurmctldParameters=enable_configless\n", "AuthType=auth/munge\n", "MaxNodeCount=254\n",
		"PartitionName=cluster Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n", "MpiDefault=none\n",
		"TaskProlog=" + TaskProlog + "\n", "ReturnToService=2\n"}

	old := base
	old.Version = Version{22, 5}
	files := old.Files()
	conf := files[ConfPath]
	for _, want := range append(slices.Clone(common), "TreeWidth=65533\n") {
		if !strings.Contains(conf, want) {
			t.Errorf("22.05: slurm.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "SlurmctldPidFile") || len(files) != 1 {
		t.Errorf("22.05: a pid file or a cgroup.conf: %v\n%s", slices.Collect(mapKeys(files)), conf)
	}

	cur := base
	cur.Version = Version{24, 11}
	cur.Subnet = netip.MustParsePrefix("192.168.50.0/16")
	files = cur.Files()
	conf = files[ConfPath]
	for _, want := range []string{"SlurmctldPidFile=/run/slurmctld/slurmctld.pid\n", fmt.Sprintf("MaxNodeCount=%d\n", MaxNodeCount)} {
		if !strings.Contains(conf, want) {
			t.Errorf("24.11: slurm.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "TreeWidth") {
		t.Errorf("24.11: TreeWidth set:\n%s", conf)
	}
	if !strings.Contains(files[CgroupConfPath], "CgroupPlugin=disabled\n") {
		t.Errorf("24.11: cgroup.conf = %q", files[CgroupConfPath])
	}
}

// TestConfMPI: MpiDefault is the plugin the head found, none without.
func TestConfMPI(t *testing.T) {
	c := Conf{Controller: "node1", ControllerAddr: netip.MustParseAddr("10.99.0.1"), Version: Version{24, 11}}
	if conf := c.Files()[ConfPath]; !strings.Contains(conf, "\nMpiDefault=none\n") {
		t.Errorf("no MPI plugin: slurm.conf lacks MpiDefault=none:\n%s", conf)
	}
	c.MPI = MPIPMIx
	if conf := c.Files()[ConfPath]; !strings.Contains(conf, "\nMpiDefault=pmix\n") || strings.Contains(conf, "MpiDefault=none") {
		t.Errorf("PMIx: slurm.conf lacks MpiDefault=pmix:\n%s", conf)
	}
}

// TestPMIxPlugin: PMIx is there only with both Slurm's plugin and the
// library it loads, in the multiarch folders of the image.
func TestPMIxPlugin(t *testing.T) {
	plugin := "usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so"
	lib := "usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so"
	for _, tc := range []struct {
		name  string
		files []string
		want  bool
	}{
		{"nothing", nil, false},
		{"plugin only (no MPI in the image)", []string{plugin}, false},
		{"library only (no Slurm)", []string{lib}, false},
		{"both", []string{plugin, lib}, true},
	} {
		root := t.TempDir()
		for _, f := range tc.files {
			if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := PMIxPlugin(root); got != tc.want {
			t.Errorf("%s: PMIxPlugin = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestParseNodesAndJobs(t *testing.T) {
	nodes := ParseNodes([]byte("node1|idle|2|0/2/0/2|none\nnode45|down*|4|0/0/4/4|clusterdebian: the node stopped heartbeating\nnode1|idle|2|0/2/0/2|none\n\nnode7|mixed|2|1/1/0/2|none\n"))
	want := []NodeState{
		{Name: "node1", State: "idle", CPUs: 2},
		{Name: "node45", State: "down*", CPUs: 4, Reason: DownReason},
		{Name: "node7", State: "mixed", CPUs: 2, CPUsAlloc: 1},
	}
	if !slices.Equal(nodes, want) {
		t.Errorf("ParseNodes = %+v\nwant %+v", nodes, want)
	}
	if !nodes[1].Down() || nodes[0].Down() || nodes[2].Drained() {
		t.Error("Down or Drained is wrong")
	}
	jobs := ParseJobs([]byte("12|user|RUNNING|3|0:05|node[1,45,7]|e2e|mpi\n13|user|PENDING|1|0:00|(Resources)|x\n"))
	wantJobs := []Job{
		{ID: "12", User: "user", State: "RUNNING", NumNodes: 3, Elapsed: "0:05", Nodes: "node[1,45,7]", Name: "e2e|mpi"},
		{ID: "13", User: "user", State: "PENDING", NumNodes: 1, Elapsed: "0:00", Nodes: "(Resources)", Name: "x"},
	}
	if !slices.Equal(jobs, wantJobs) {
		t.Errorf("ParseJobs = %+v\nwant %+v", jobs, wantJobs)
	}
	if !jobs[0].Running() || jobs[1].Running() {
		t.Error("Running is wrong")
	}
}

// fakeController records the calls; tests of other packages have their own.
type fakeController struct {
	calls []string
}

func (f *fakeController) Nodes(context.Context) ([]NodeState, error) { return nil, nil }
func (f *fakeController) Jobs(context.Context) ([]Job, error)        { return nil, nil }
func (f *fakeController) Update(_ context.Context, nodes []string, state, reason string) error {
	f.calls = append(f.calls, "update "+strings.Join(nodes, ",")+" "+state+" "+reason)
	return nil
}
func (f *fakeController) Delete(_ context.Context, nodes []string) error {
	f.calls = append(f.calls, "delete "+strings.Join(nodes, ","))
	return nil
}
func (f *fakeController) Cancel(_ context.Context, ids []string) error {
	f.calls = append(f.calls, "cancel "+strings.Join(ids, ","))
	return nil
}
func (f *fakeController) Reconfigure(context.Context) error { return nil }

// TestReconcile: a node the registry has down and Slurm up goes down; one
// the registry no longer has is marked down, then deleted; the rest is
// left to slurmd.
func TestReconcile(t *testing.T) {
	sl := []NodeState{{Name: "node1", State: "idle"}, {Name: "node2", State: "allocated"},
		{Name: "node3", State: "down*"}, {Name: "node4", State: "idle*"}, {Name: "node9", State: "down"}}
	reg := []registry.Node{{Name: "node1", State: registry.StateUp}, {Name: "node2", State: registry.StateUp},
		{Name: "node3", State: registry.StateDown}, {Name: "node4", State: registry.StateDown}, {Name: "node5", State: registry.StateUp}}
	p := Reconcile(sl, reg)
	if !slices.Equal(p.Down, []string{"node4"}) || !slices.Equal(p.Delete, []string{"node9"}) {
		t.Errorf("Reconcile = %+v, want node4 down and node9 deleted", p)
	}
	var f fakeController
	if err := p.Apply(context.Background(), &f); err != nil {
		t.Fatal(err)
	}
	want := []string{"update node4,node9 down " + DownReason, "delete node9"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("Apply ran %q, want %q", f.calls, want)
	}
	f.calls = nil
	if err := (Plan{}).Apply(context.Background(), &f); err != nil || len(f.calls) != 0 {
		t.Errorf("an empty plan ran %q, %v", f.calls, err)
	}
}

// TestCommands: the real controller's command lines, run by a stand-in.
func TestCommands(t *testing.T) {
	var ran []string
	c := Commands{Run: func(_ context.Context, name string, args ...string) ([]byte, error) {
		ran = append(ran, name+" "+strings.Join(args, " "))
		return nil, nil
	}}
	ctx := context.Background()
	c.Update(ctx, []string{"node2", "node3"}, "drain", "shutdown")
	c.Delete(ctx, []string{"node3"})
	c.Cancel(ctx, []string{"12", "13"})
	c.Update(ctx, nil, "drain", "x")
	c.Nodes(ctx)
	c.Jobs(ctx)
	want := []string{
		"scontrol update nodename=node2,node3 state=drain reason=shutdown",
		"scontrol delete nodename=node3",
		"scancel 12 13",
		"sinfo --noheader --Node --format %N|%T|%c|%C|%E",
		"squeue --noheader --format %i|%u|%T|%D|%M|%R|%j",
	}
	if !slices.Equal(ran, want) {
		t.Errorf("ran\n%q\nwant\n%q", ran, want)
	}
}

// TestEnsureMungeKey: made once, random, mode 0600, and kept; a short key
// is refused, not replaced.
func TestEnsureMungeKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := EnsureMungeKey(dir)
	if err != nil || len(k1) != MungeKeySize {
		t.Fatalf("EnsureMungeKey: %d bytes, %v", len(k1), err)
	}
	fi, err := os.Stat(filepath.Join(dir, contract.MungeKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v", fi, err)
	}
	k2, err := EnsureMungeKey(dir)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("second call: a new key or %v", err)
	}
	other, _ := EnsureMungeKey(t.TempDir())
	if bytes.Equal(k1, other) {
		t.Error("two state folders, one key")
	}
	if err := os.WriteFile(filepath.Join(dir, contract.MungeKeyFile), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureMungeKey(dir); err == nil || !strings.Contains(err.Error(), contract.MungeKeyFile) {
		t.Errorf("short key: %v, want an error naming the file", err)
	}
}

// TestMachineFilesNoSlurmd: without slurmd options (node1 runs no jobs)
// the options file goes, and a root without munge is ErrNoMunge.
func TestMachineFilesNoSlurmd(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	passwd := filepath.Join(root, "etc/passwd")
	os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
	if _, err := MachineFiles(root, bytes.Repeat([]byte("k"), 32), nil); err == nil {
		t.Error("no munge user: no error")
	}
	os.WriteFile(passwd, []byte(fmt.Sprintf("munge:x:%d:%d::/:/bin/false\n", os.Getuid(), os.Getgid())), 0o644)
	key := bytes.Repeat([]byte("k"), 32)
	if changed, err := MachineFiles(root, key, &SlurmdOptions{Name: "node1", Controller: "10.99.0.1", CPUs: 2}); err != nil || !changed {
		t.Fatalf("first write: %v, %v", changed, err)
	}
	if fi, err := os.Stat(filepath.Join(root, contract.RunDir)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: %v, %v; want mode 0755, for munged to get through", contract.RunDir, fi, err)
	}
	if changed, err := MachineFiles(root, key, &SlurmdOptions{Name: "node1", Controller: "10.99.0.1", CPUs: 2}); err != nil || changed {
		t.Errorf("same files again: changed %v, %v", changed, err)
	}
	if changed, err := MachineFiles(root, key, nil); err != nil || !changed {
		t.Errorf("no slurmd: changed %v, %v", changed, err)
	}
	if _, err := os.Stat(filepath.Join(root, contract.SlurmdEnvFile)); !os.IsNotExist(err) {
		t.Errorf("slurmd's options still there: %v", err)
	}
}
