package cli

import (
	"slices"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
)

func TestSlurmLines(t *testing.T) {
	nodes := []registry.Node{{Name: "node1"}, {Name: "node7"}, {Name: "node9"}}
	if got := slurmLines(slurm.Status{}, nodes); got != nil {
		t.Errorf("no Slurm: %q", got)
	}
	if got := slurmLines(slurm.Status{Enabled: true, Error: "sinfo: no controller"}, nodes); !slices.Equal(got, []string{"Slurm: the controller did not answer the head: sinfo: no controller"}) {
		t.Errorf("controller down: %q", got)
	}
	st := slurm.Status{Enabled: true,
		Nodes: []slurm.NodeState{{Name: "node1", State: "mixed"}, {Name: "node7", State: "down*", Reason: slurm.DownReason},
			{Name: "node4", State: "idle", Reason: "ignored"}},
		Jobs: []slurm.Job{{ID: "12", User: "user", Name: "mpi", State: "RUNNING", Elapsed: "1:02", Nodes: "node1"},
			{ID: "13", User: "user", Name: "x", State: "PENDING", Elapsed: "0:00", Nodes: "(Resources)"}}}
	want := []string{
		"Slurm: node1 mixed, node7 down* (" + slurm.DownReason + "), node9 not in Slurm, node4 idle (not in the registry)",
		"       2 job(s), 1 running",
		"       12 user mpi RUNNING 1:02 node1",
		"       13 user x PENDING 0:00 (Resources)",
	}
	if got := slurmLines(st, nodes); !slices.Equal(got, want) {
		t.Errorf("slurmLines =\n%q\nwant\n%q", got, want)
	}
}
