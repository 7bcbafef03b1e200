package slurm

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// WriteMetrics writes Slurm's state in the Prometheus text format: whether
// the controller answers, each node's state and allocated CPUs, and the
// jobs by state. Nothing when the cluster has no Slurm.
func WriteMetrics(w io.Writer, s Status) error {
	if !s.Enabled {
		return nil
	}
	var b strings.Builder
	b.WriteString("# HELP clusterdebian_slurm_up 1 if Slurm's controller answered the head, 0 if not.\n# TYPE clusterdebian_slurm_up gauge\n")
	up := 1
	if s.Error != "" {
		up = 0
	}
	fmt.Fprintf(&b, "clusterdebian_slurm_up %d\n", up)
	b.WriteString("# HELP clusterdebian_slurm_node_state The node's state in Slurm (sinfo's; a trailing * when it does not answer), always 1.\n# TYPE clusterdebian_slurm_node_state gauge\n")
	for _, n := range s.Nodes {
		fmt.Fprintf(&b, "clusterdebian_slurm_node_state{node=\"%s\",state=\"%s\"} 1\n", escape(n.Name), escape(n.State))
	}
	b.WriteString("# HELP clusterdebian_slurm_node_cpus_allocated CPUs of the node that jobs hold.\n# TYPE clusterdebian_slurm_node_cpus_allocated gauge\n")
	for _, n := range s.Nodes {
		fmt.Fprintf(&b, "clusterdebian_slurm_node_cpus_allocated{node=\"%s\"} %d\n", escape(n.Name), n.CPUsAlloc)
	}
	counts := map[string]int{"running": 0, "pending": 0}
	for _, j := range s.Jobs {
		counts[strings.ToLower(j.State)]++
	}
	states := make([]string, 0, len(counts))
	for st := range counts {
		states = append(states, st)
	}
	slices.Sort(states)
	b.WriteString("# HELP clusterdebian_slurm_jobs Jobs in the queue by state.\n# TYPE clusterdebian_slurm_jobs gauge\n")
	for _, st := range states {
		fmt.Fprintf(&b, "clusterdebian_slurm_jobs{state=\"%s\"} %d\n", escape(st), counts[st])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// escape escapes a label value as the text format wants.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
