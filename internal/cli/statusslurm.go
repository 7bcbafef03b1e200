package cli

import (
	"fmt"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
)

// slurmLines describes Slurm's view of the cluster for `status`: each
// registered node's Slurm state (with the reason of a down or drained
// one), the nodes Slurm knows that the registry does not, and the jobs.
// Nothing when the head runs no Slurm.
func slurmLines(st slurm.Status, nodes []registry.Node) []string {
	if !st.Enabled {
		return nil
	}
	if st.Error != "" {
		return []string{"Slurm: the controller did not answer the head: " + st.Error}
	}
	var parts []string
	seen := map[string]bool{}
	state := func(n slurm.NodeState) string {
		s := n.Name + " " + n.State
		if n.Reason != "" && (n.Down() || n.Drained()) {
			s += " (" + n.Reason + ")"
		}
		return s
	}
	for _, n := range nodes {
		seen[n.Name] = true
		if s, ok := st.Node(n.Name); ok {
			parts = append(parts, state(s))
		} else {
			parts = append(parts, n.Name+" not in Slurm")
		}
	}
	for _, s := range st.Nodes {
		if !seen[s.Name] {
			parts = append(parts, state(s)+" (not in the registry)")
		}
	}
	lines := []string{"Slurm: " + strings.Join(parts, ", ")}
	running := 0
	for _, j := range st.Jobs {
		if j.Running() {
			running++
		}
	}
	lines = append(lines, fmt.Sprintf("       %d job(s), %d running", len(st.Jobs), running))
	for _, j := range st.Jobs {
		lines = append(lines, fmt.Sprintf("       %s %s %s %s %s %s", j.ID, j.User, j.Name, j.State, j.Elapsed, j.Nodes))
	}
	return lines
}
