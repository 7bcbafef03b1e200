package shutdown

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
)

// PollEvery is how often Run asks the registry whether a node left, and
// pings the nodes that are going: Options.Grace and Options.Settle are
// counted in such polls.
const PollEvery = time.Second

// Options say how Run shuts the cluster down.
type Options struct {
	// Reboot reboots the machines instead of powering them off.
	Reboot bool
	// DryRun prints the plan and does nothing else.
	DryRun bool
	// Force powers node1 off even when a node did not confirm, or still
	// answers on the network after Settle.
	Force bool
	// PermanentHead says this node1 is a permanent one, an installed
	// machine set up by localnode1: it stays on after the nodes unless
	// IncludeHead.
	PermanentHead, IncludeHead bool
	// Timeout bounds each node's ssh, connection included
	// (pexec.Options.Timeout; 0: pexec.DefaultTimeout).
	Timeout time.Duration
	// Grace is how long a node whose ssh connection dropped may take to
	// leave the registry (or be marked down) to count as confirmed; at
	// least one look.
	Grace time.Duration
	// Settle is how long the nodes may take to go off the network after
	// confirming; at least one round of pings.
	Settle time.Duration
	// JobWait is how long running Slurm jobs may take to end once the
	// nodes are drained (System.Slurm); Force cancels them instead.
	JobWait time.Duration
}

// System is what a shutdown acts on: the head's registry, the nodes, the
// network and this machine. Host gives the real ones; tests fake them, so
// that no test powers anything off or waits for real.
type System struct {
	// Nodes returns the head's node list (registry.Client.Nodes).
	Nodes func(ctx context.Context) ([]registry.Node, error)
	// Exec runs argv on the named nodes at once, each within timeout, and
	// returns one result per node, in their order (pexec.Run over ssh).
	Exec func(ctx context.Context, nodes, argv []string, timeout time.Duration) []pexec.Result
	// Alive pings addr (an IP address) once and says whether it answered.
	Alive func(ctx context.Context, addr string) bool
	// Local runs `systemctl action` (poweroff or reboot) on this machine,
	// node1.
	Local func(ctx context.Context, action string) error
	// Slurm, when not nil, is the cluster's Slurm: the nodes are drained
	// and their jobs waited for (or cancelled) before they go.
	Slurm slurm.Controller
	// Sleep waits d, or returns ctx's error when ctx ends first.
	Sleep func(ctx context.Context, d time.Duration) error
	// Out gets the plan and the progress; Err what --force goes past.
	Out, Err io.Writer
}

// Host is the System of the machine this runs on, node1: nodes lists the
// head's nodes, ssh reaches them (pexec), ping(8) probes them, systemctl
// powers this machine off.
func Host(nodes func(ctx context.Context) ([]registry.Node, error), out, errOut io.Writer) *System {
	return &System{
		Nodes: nodes,
		Exec: func(ctx context.Context, names, argv []string, timeout time.Duration) []pexec.Result {
			targets := make([]pexec.Target, len(names))
			for i, n := range names {
				targets[i] = pexec.Target{Name: n}
			}
			return pexec.Run(ctx, targets, argv, pexec.Options{Timeout: timeout})
		},
		Alive: func(ctx context.Context, addr string) bool {
			return exec.CommandContext(ctx, "ping", "-c", "1", "-W", "2", "-q", addr).Run() == nil
		},
		Local: func(ctx context.Context, action string) error {
			if b, err := exec.CommandContext(ctx, "systemctl", action).CombinedOutput(); err != nil {
				return fmt.Errorf("systemctl %s: %v: %s", action, err, strings.TrimSpace(string(b)))
			}
			return nil
		},
		Sleep: sleep,
		Out:   out,
		Err:   errOut,
	}
}

// sleep waits d or until ctx ends, and then returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// HeadKeptError is Run's answer when it left node1 up because some node
// did not confirm, or still answered on the network: node1 must stay to
// serve that node's root until it is shut down by hand (or Force is given).
type HeadKeptError struct {
	// Nodes are the nodes in question.
	Nodes []string
	msg   string
}

// Error says which nodes and why, and what to do.
func (e *HeadKeptError) Error() string { return e.msg }

// Run shuts the cluster down in the one safe order. It lists the nodes
// (sys.Nodes) and prints the plan (Plan.Describe); with sys.Slurm it
// drains the nodes in Slurm and waits for their jobs, or cancels them
// with Force (drainSlurm: jobs still running after JobWait stop the
// shutdown with a *JobsRunningError); with DryRun it only says so. Otherwise it runs `systemctl poweroff` (or reboot) on every other
// node that is up, at once (sys.Exec), and confirms each (Confirmer: the
// command's answer, or the node leaving the registry within Grace). Then
// it waits until every one of them is off the network (WaitGone, pinging
// the addresses the plan took from the registry), and only then powers off
// node1 (sys.Local), unless it is a permanent node1 not included.
//
// When a node did not confirm, or still answers after Settle, Run leaves
// node1 up and returns a *HeadKeptError naming it; with Force it says so
// on sys.Err and goes on. Other errors are the registry's at planning and
// sys.Local's.
//
// When ctx ends on the way (Ctrl-C), Run stops where it is, never powers
// node1 off, undoes the Slurm drains of the nodes that stay up, and
// returns an *InterruptedError saying which nodes went, which may be
// going, which were never told, and which drains it undid or left.
func Run(ctx context.Context, sys *System, o Options) error {
	nodes, err := sys.Nodes(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return interrupted(ctx, sys, Plan{}, "listing the nodes", nil, nil, nil, nil)
		}
		return err
	}
	verb, action := "power off", "poweroff"
	if o.Reboot {
		verb, action = "reboot", "reboot"
	}
	plan := MakePlan(nodes)
	plan.KeepHead = o.PermanentHead && !o.IncludeHead
	fmt.Fprint(sys.Out, plan.Describe(verb))
	var drained []string
	if sys.Slurm != nil {
		drained, err = drainSlurm(ctx, sys, o, plan)
		if ctx.Err() != nil && !o.DryRun {
			return interrupted(ctx, sys, plan, "draining Slurm", drained, nil, nil, plan.Nodes)
		}
		if err != nil {
			return err
		}
	}
	if o.DryRun {
		return nil
	}
	if len(plan.Nodes) > 0 {
		if err := nodesOff(ctx, sys, o, plan, action, drained); err != nil {
			return err
		}
	}
	if plan.KeepHead {
		fmt.Fprintln(sys.Out, "node1 stays on: it is a permanent node1 (localnode1); --include-head powers it off too")
		return nil
	}
	// The last moment to stop: after this, node1 is gone.
	if ctx.Err() != nil {
		return interrupted(ctx, sys, plan, "about to power off node1", drained, plan.Nodes, nil, nil)
	}
	fmt.Fprintf(sys.Out, "%s this machine (node1)\n", verb)
	return sys.Local(ctx, action)
}

// nodesOff tells plan's nodes to go, confirms them and waits until they
// are off the network; an error means node1 must stay up. When ctx ends
// on the way, the error is an *InterruptedError; drained are the nodes
// drainSlurm drained, for it to undo where they stay up.
func nodesOff(ctx context.Context, sys *System, o Options, plan Plan, action string, drained []string) error {
	wait := func(ctx context.Context) error { return sys.Sleep(ctx, PollEvery) }
	res := sys.Exec(ctx, plan.Nodes, []string{"systemctl", action}, o.Timeout)
	if ctx.Err() != nil {
		off, unsure, up := toldOrNot(res)
		return interrupted(ctx, sys, plan, "telling the nodes to go", drained, off, unsure, up)
	}
	c := Confirmer{Nodes: sys.Nodes, Polls: polls(o.Grace), Wait: wait}
	vs := c.Confirm(ctx, res)
	if ctx.Err() != nil {
		var off, unsure []string
		for _, v := range vs {
			if v.Confirmed {
				off = append(off, v.Node)
			} else {
				unsure = append(unsure, v.Node)
			}
		}
		return interrupted(ctx, sys, plan, "confirming the nodes", drained, off, unsure, nil)
	}
	if rep := Report(vs); rep != "" {
		if !o.Force {
			var names []string
			for _, v := range Unconfirmed(vs) {
				names = append(names, v.Node)
			}
			return &HeadKeptError{Nodes: names, msg: strings.TrimRight(rep, "\n") +
				"\nnode1 stays up; shut those down by hand, or run again with --force"}
		}
		fmt.Fprint(sys.Err, rep)
	}
	fmt.Fprintf(sys.Out, "%d node(s) confirmed\n", len(vs)-len(Unconfirmed(vs)))
	// A node that has left is still shutting down from node1's root: wait
	// until it is off the network. By address: a node that left is no
	// longer in /etc/hosts, and its name would not resolve.
	fmt.Fprintf(sys.Out, "waiting for the nodes to go off the network (up to %s)\n", o.Settle)
	alive := func(ctx context.Context, name string) bool { return sys.Alive(ctx, plan.Addr(name)) }
	still := WaitGone(ctx, plan.Nodes, polls(o.Settle), wait, alive)
	if ctx.Err() != nil {
		var off, unsure []string
		for _, v := range vs {
			if v.Confirmed {
				off = append(off, v.Node)
			} else {
				unsure = append(unsure, v.Node) // --force went past them
			}
		}
		e := interrupted(ctx, sys, plan, "waiting for the nodes to go off the network", drained, off, unsure, nil)
		e.StillAnswering = still
		return e
	}
	if len(still) > 0 {
		msg := fmt.Sprintf("still answering after %s: %s", o.Settle, strings.Join(still, ", "))
		if !o.Force {
			return &HeadKeptError{Nodes: still, msg: msg + "\nnode1 stays up; run again with --force to power it off anyway"}
		}
		fmt.Fprintln(sys.Err, msg)
	}
	return nil
}

// polls is how many polls, PollEvery apart, fill d: at least one.
func polls(d time.Duration) int { return max(int(d/PollEvery), 1) }
