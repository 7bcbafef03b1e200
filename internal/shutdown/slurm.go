package shutdown

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/hostlist"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
)

// DrainReason is the reason shutdown gives Slurm for the nodes it drains.
const DrainReason = "clusterdebian shutdown"

// JobsRunningError is Run's answer when Slurm jobs still ran after
// Options.JobWait: nothing was powered off, and the nodes take jobs again.
type JobsRunningError struct {
	// Jobs are the ids of the jobs still running.
	Jobs []string
	msg  string
}

// Error says which jobs, and what to do.
func (e *JobsRunningError) Error() string { return e.msg }

// slurmNodes are the Slurm nodes the plan powers off: its nodes, and node1
// unless it stays on.
func slurmNodes(plan Plan, known []slurm.NodeState) []string {
	var names []string
	for _, n := range known {
		if slices.Contains(plan.Nodes, n.Name) || (n.Name == plan.Head && plan.Head != "" && !plan.KeepHead) {
			names = append(names, n.Name)
		}
	}
	return names
}

func running(jobs []slurm.Job) []string {
	var ids []string
	for _, j := range jobs {
		if j.Running() {
			ids = append(ids, j.ID)
		}
	}
	return ids
}

func pending(jobs []slurm.Job) []string {
	var ids []string
	for _, j := range jobs {
		if !j.Running() {
			ids = append(ids, j.ID)
		}
	}
	return ids
}

// drainSlurm takes the nodes the plan powers off out of Slurm's
// scheduling before they go: it drains them (no new job starts there),
// then waits up to o.JobWait for the running jobs to end, or with o.Force
// cancels them at once. It says what it did on sys.Out. With DryRun it
// only says what it would do.
//
// A controller that does not answer does not stop a shutdown: Run says so
// on sys.Err and goes on. Jobs still running after JobWait do: the nodes
// are resumed, and the answer is a *JobsRunningError. It returns the nodes
// it drained and still leaves drained (for Run to undo where they stay up
// when it is interrupted); when ctx ends while it waits, it returns them
// with ctx's error.
func drainSlurm(ctx context.Context, sys *System, o Options, plan Plan) ([]string, error) {
	ctl := sys.Slurm
	known, err := ctl.Nodes(ctx)
	var jobs []slurm.Job
	if err == nil {
		jobs, err = ctl.Jobs(ctx)
	}
	if err != nil {
		fmt.Fprintf(sys.Err, "Slurm: the controller did not answer (%v): no drain, running jobs end with their nodes\n", err)
		return nil, nil
	}
	names := slurmNodes(plan, known)
	run := running(jobs)
	if o.DryRun {
		if len(names) > 0 {
			fmt.Fprintf(sys.Out, "Slurm: drain %s first\n", hostlist.Compress(names))
		}
		switch {
		case len(run) == 0:
			fmt.Fprintln(sys.Out, "Slurm: no job is running")
		case o.Force:
			fmt.Fprintf(sys.Out, "Slurm: cancel the %d running job(s): %s\n", len(run), strings.Join(run, " "))
		default:
			fmt.Fprintf(sys.Out, "Slurm: wait up to %s for the %d running job(s): %s (--force cancels them)\n", o.JobWait, len(run), strings.Join(run, " "))
		}
		return nil, nil
	}
	var drained []string
	if len(names) > 0 {
		if err := ctl.Update(ctx, names, "drain", DrainReason); err != nil {
			fmt.Fprintf(sys.Err, "Slurm: draining %s: %v\n", hostlist.Compress(names), err)
			if ctx.Err() != nil {
				// Cut short: the drain may have reached the controller.
				return names, ctx.Err()
			}
		} else {
			drained = names
			fmt.Fprintf(sys.Out, "Slurm: drained %s: no new job starts there\n", hostlist.Compress(names))
		}
	}
	if p := pending(jobs); len(p) > 0 {
		fmt.Fprintf(sys.Out, "Slurm: %d pending job(s) will not run: %s\n", len(p), strings.Join(p, " "))
	}
	if len(run) == 0 {
		fmt.Fprintln(sys.Out, "Slurm: no job is running")
		return drained, nil
	}
	if o.Force {
		if err := ctl.Cancel(ctx, run); err != nil {
			fmt.Fprintf(sys.Err, "Slurm: cancelling jobs %s: %v\n", strings.Join(run, " "), err)
		} else {
			fmt.Fprintf(sys.Out, "Slurm: cancelled the %d running job(s) (--force): %s\n", len(run), strings.Join(run, " "))
		}
		return drained, nil
	}
	fmt.Fprintf(sys.Out, "Slurm: waiting up to %s for the %d running job(s) to end: %s\n", o.JobWait, len(run), strings.Join(run, " "))
	for range polls(o.JobWait) {
		if err := sys.Sleep(ctx, PollEvery); err != nil {
			return drained, err
		}
		jobs, err := ctl.Jobs(ctx)
		if err != nil {
			continue // the controller may be busy; the next poll may answer
		}
		if run = running(jobs); len(run) == 0 {
			fmt.Fprintln(sys.Out, "Slurm: every job ended")
			return drained, nil
		}
	}
	msg := fmt.Sprintf("Slurm: %d job(s) still running after %s: %s\nnothing was powered off", len(run), o.JobWait, strings.Join(run, " "))
	if len(drained) > 0 {
		if err := ctl.Update(ctx, drained, "resume", ""); err != nil {
			msg += fmt.Sprintf("; the nodes stay drained (resuming them: %v)", err)
		} else {
			msg += "; the nodes take jobs again"
		}
	}
	return nil, &JobsRunningError{Jobs: run, msg: msg + "\nwait for the jobs, or run again with --force to cancel them"}
}

// DefaultJobWait is how long shutdown waits for running jobs by default.
const DefaultJobWait = 10 * time.Minute
