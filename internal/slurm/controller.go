package slurm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// NodeState is one node as Slurm's controller sees it.
type NodeState struct {
	Name string `json:"name"`
	// State is sinfo's long state: idle, mixed, allocated, down, drained,
	// draining, completing, ...; a trailing "*" means the node does not
	// answer.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	CPUs   int    `json:"cpus"`
	// CPUsAlloc are the CPUs jobs hold.
	CPUsAlloc int `json:"cpus_alloc"`
}

// Down reports whether Slurm has the node down.
func (n NodeState) Down() bool { return strings.HasPrefix(n.State, "down") }

// Drained reports whether the node takes no new jobs because it was
// drained (drained, or draining while jobs finish).
func (n NodeState) Drained() bool { return strings.HasPrefix(n.State, "drain") }

// Job is one job in the queue.
type Job struct {
	ID    string `json:"id"`
	User  string `json:"user"`
	Name  string `json:"name"`
	State string `json:"state"` // squeue's long state: RUNNING, PENDING, COMPLETING, ...
	// Nodes is the job's node list when it runs, else why it waits.
	Nodes    string `json:"nodes"`
	NumNodes int    `json:"num_nodes"`
	Elapsed  string `json:"elapsed"`
}

// Running reports whether the job holds nodes: running, or ending.
func (j Job) Running() bool { return j.State == "RUNNING" || j.State == "COMPLETING" }

// Status is Slurm's state as the head serves it (GET PathStatus).
type Status struct {
	// Enabled is false when the cluster has no Slurm (cluster.scheduler =
	// "none", or no Slurm installed on node1).
	Enabled bool `json:"enabled"`
	// Error says why the controller did not answer.
	Error   string      `json:"error,omitempty"`
	Nodes   []NodeState `json:"nodes"`
	Jobs    []Job       `json:"jobs"`
	Updated time.Time   `json:"updated"`
}

// PathStatus is where the head serves Status: GET, no token.
const PathStatus = "/api/v1/slurm"

// Node returns the state of the node name, or false.
func (s Status) Node(name string) (NodeState, bool) {
	i := slices.IndexFunc(s.Nodes, func(n NodeState) bool { return n.Name == name })
	if i < 0 {
		return NodeState{}, false
	}
	return s.Nodes[i], true
}

// Controller is what the cluster asks of Slurm's controller. Commands is
// the real one; tests fake it.
type Controller interface {
	// Nodes lists the nodes slurmctld knows, by name.
	Nodes(ctx context.Context) ([]NodeState, error)
	// Jobs lists the jobs in the queue.
	Jobs(ctx context.Context) ([]Job, error)
	// Update sets nodes' state ("down", "drain", "resume"), with a reason
	// for down and drain.
	Update(ctx context.Context, nodes []string, state, reason string) error
	// Delete removes dynamic nodes; they must run no job.
	Delete(ctx context.Context, nodes []string) error
	// Cancel cancels jobs by id.
	Cancel(ctx context.Context, ids []string) error
	// Reconfigure has slurmctld (and through it every slurmd) read the
	// configuration again.
	Reconfigure(ctx context.Context) error
}

// Commands is the Controller of the machine it runs on: Slurm's commands
// (sinfo, squeue, scontrol, scancel), which find the controller through
// slurm.conf. Run runs one and returns its standard output; its error
// carries what it printed on standard error.
type Commands struct {
	Run func(ctx context.Context, name string, args ...string) ([]byte, error)
}

// Host returns the Commands of this machine.
func Host() Commands {
	return Commands{Run: func(ctx context.Context, name string, args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if msg == "" {
				msg = strings.TrimSpace(string(out))
			}
			return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
		}
		return out, nil
	}}
}

// sep separates sinfo's and squeue's fields: a character no node name,
// state or user has; the free-form field (a reason, a job name) is last.
const sep = "|"

func (c Commands) Nodes(ctx context.Context) ([]NodeState, error) {
	out, err := c.Run(ctx, "sinfo", "--noheader", "--Node", "--format", strings.Join([]string{"%N", "%T", "%c", "%C", "%E"}, sep))
	if err != nil {
		return nil, err
	}
	return ParseNodes(out), nil
}

// ParseNodes reads `sinfo --noheader --Node --format "%N|%T|%c|%C|%E"`: a
// line per node and partition, each node kept once. Sinfo's "none" reason
// is no reason.
func ParseNodes(out []byte) []NodeState {
	var nodes []NodeState
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.SplitN(strings.TrimSpace(line), sep, 5)
		if len(f) < 5 || f[0] == "" || slices.ContainsFunc(nodes, func(n NodeState) bool { return n.Name == f[0] }) {
			continue
		}
		n := NodeState{Name: f[0], State: f[1], Reason: strings.TrimSpace(f[4])}
		if n.Reason == "none" {
			n.Reason = ""
		}
		n.CPUs, _ = strconv.Atoi(f[2])
		// %C is allocated/idle/other/total.
		if a, _, ok := strings.Cut(f[3], "/"); ok {
			n.CPUsAlloc, _ = strconv.Atoi(a)
		}
		nodes = append(nodes, n)
	}
	return nodes
}

func (c Commands) Jobs(ctx context.Context) ([]Job, error) {
	out, err := c.Run(ctx, "squeue", "--noheader", "--format", strings.Join([]string{"%i", "%u", "%T", "%D", "%M", "%R", "%j"}, sep))
	if err != nil {
		return nil, err
	}
	return ParseJobs(out), nil
}

// ParseJobs reads `squeue --noheader --format "%i|%u|%T|%D|%M|%R|%j"`.
func ParseJobs(out []byte) []Job {
	var jobs []Job
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.SplitN(strings.TrimSpace(line), sep, 7)
		if len(f) < 7 || f[0] == "" {
			continue
		}
		j := Job{ID: f[0], User: f[1], State: f[2], Elapsed: f[4], Nodes: f[5], Name: f[6]}
		j.NumNodes, _ = strconv.Atoi(f[3])
		jobs = append(jobs, j)
	}
	return jobs
}

func (c Commands) Update(ctx context.Context, nodes []string, state, reason string) error {
	if len(nodes) == 0 {
		return nil
	}
	args := []string{"update", "nodename=" + strings.Join(nodes, ","), "state=" + state}
	if reason != "" {
		args = append(args, "reason="+reason)
	}
	_, err := c.Run(ctx, "scontrol", args...)
	return err
}

func (c Commands) Delete(ctx context.Context, nodes []string) error {
	if len(nodes) == 0 {
		return nil
	}
	_, err := c.Run(ctx, "scontrol", "delete", "nodename="+strings.Join(nodes, ","))
	return err
}

func (c Commands) Cancel(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := c.Run(ctx, "scancel", ids...)
	return err
}

func (c Commands) Reconfigure(ctx context.Context) error {
	_, err := c.Run(ctx, "scontrol", "reconfigure")
	return err
}

// DownReason is the reason the head gives Slurm for a node it marks down.
const DownReason = "clusterdebian: the node stopped heartbeating"

// Plan is what Slurm must be told to follow the registry: which nodes to
// mark down, and which to delete.
type Plan struct {
	Down, Delete []string
}

// Reconcile compares Slurm's nodes with the registry's: a node the
// registry has down (it stopped heartbeating: powered off, hung, cut off)
// that Slurm still has up is to be marked down; a node Slurm knows and the
// registry does not (it was pruned, or shut down cleanly and left) is to be
// deleted. A node the registry has up is left to its slurmd.
func Reconcile(slurm []NodeState, nodes []registry.Node) Plan {
	var p Plan
	for _, s := range slurm {
		i := slices.IndexFunc(nodes, func(n registry.Node) bool { return n.Name == s.Name })
		switch {
		case i < 0:
			p.Delete = append(p.Delete, s.Name)
		case nodes[i].State == registry.StateDown && !s.Down():
			p.Down = append(p.Down, s.Name)
		}
	}
	return p
}

// Apply carries a plan out: the nodes to delete are marked down first,
// which ends their jobs (a node with jobs cannot be deleted).
func (p Plan) Apply(ctx context.Context, c Controller) error {
	var errs []error
	if down := append(slices.Clone(p.Down), p.Delete...); len(down) > 0 {
		if err := c.Update(ctx, down, "down", DownReason); err != nil {
			errs = append(errs, err)
		}
	}
	if len(p.Delete) > 0 {
		if err := c.Delete(ctx, p.Delete); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
