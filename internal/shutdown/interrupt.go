package shutdown

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/hostlist"
	"github.com/clusterdebian/clusterdebian/internal/pexec"
)

// InterruptedError is Run's answer when its context ended (Ctrl-C, SIGTERM)
// before it finished. Run then never powers node1 off, and leaves the
// cluster in a state it can name: which nodes went, which may be going,
// which were never told, and what became of the Slurm drains. Running
// shutdown again finishes the job (nodes already down are skipped).
type InterruptedError struct {
	// Phase is what Run was doing: "listing the nodes", "draining Slurm",
	// "telling the nodes to go", "confirming the nodes", "waiting for the
	// nodes to go off the network", "about to power off node1".
	Phase string
	// Off are the nodes confirmed going down (their command was accepted,
	// or they left the registry).
	Off []string
	// Unsure were told to go but not confirmed: the command may have
	// reached them, so they may be going down.
	Unsure []string
	// Up were never told: they run on.
	Up []string
	// StillAnswering are nodes of Off that still answered pings when the
	// wait for them ended.
	StillAnswering []string
	// Drained are nodes left drained in Slurm: they are off or may be
	// going down, so no job must start there. Resumed are nodes whose
	// drain was undone: they stay up and take jobs again. ResumeErr is
	// why resuming failed, if it did (then they stay drained, and
	// `scontrol update nodename=... state=resume` undoes it).
	Drained, Resumed []string
	ResumeErr        error
	// Cause is the context's error.
	Cause error
}

// Unwrap returns the context's error (context.Canceled on Ctrl-C).
func (e *InterruptedError) Unwrap() error { return e.Cause }

// Error says, one fact a line, what state the cluster was left in.
func (e *InterruptedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "shutdown interrupted while %s; node1 stays up\n", e.Phase)
	list := func(what string, names []string) {
		if len(names) > 0 {
			fmt.Fprintf(&b, "  %s: %s\n", what, hostlist.Compress(names))
		}
	}
	if len(e.Off)+len(e.Unsure) == 0 {
		b.WriteString("  no node was told to power off\n")
	}
	list("powering off (confirmed)", e.Off)
	list("of those, still answering on the network", e.StillAnswering)
	list("told to power off, not confirmed (may be going down)", e.Unsure)
	list("still up (never told)", e.Up)
	if len(e.Drained) > 0 {
		fmt.Fprintf(&b, "  Slurm: %s left drained: off or going down, no job must start there\n", hostlist.Compress(e.Drained))
	}
	if len(e.Resumed) > 0 {
		if e.ResumeErr != nil {
			fmt.Fprintf(&b, "  Slurm: %s stay up but could not be resumed (%v): they stay drained; scontrol update nodename=%s state=resume undoes it\n",
				hostlist.Compress(e.Resumed), e.ResumeErr, hostlist.Compress(e.Resumed))
		} else {
			fmt.Fprintf(&b, "  Slurm: drain undone on %s: they stay up and take jobs again\n", hostlist.Compress(e.Resumed))
		}
	}
	b.WriteString("run clusterdebian shutdown again to finish (nodes already down are skipped)")
	return b.String()
}

// resumeTimeout bounds undoing the Slurm drains once Run is interrupted:
// its context is gone, and the user wants out.
const resumeTimeout = 30 * time.Second

// interrupted builds Run's answer once ctx ended during phase, and undoes
// the Slurm drains (drained) of the nodes that stay up: node1, and the
// nodes in up. Off and unsure nodes stay drained.
func interrupted(ctx context.Context, sys *System, plan Plan, phase string, drained, off, unsure, up []string) *InterruptedError {
	e := &InterruptedError{Phase: phase, Off: off, Unsure: unsure, Up: up, Cause: context.Cause(ctx)}
	if len(drained) == 0 {
		return e
	}
	for _, n := range drained {
		if slices.Contains(off, n) || slices.Contains(unsure, n) {
			e.Drained = append(e.Drained, n)
		} else {
			e.Resumed = append(e.Resumed, n)
		}
	}
	if len(e.Resumed) > 0 {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resumeTimeout)
		defer cancel()
		e.ResumeErr = sys.Slurm.Update(rctx, e.Resumed, "resume", "")
	}
	return e
}

// toldOrNot sorts the results of a power-off command cut short by the
// context: accepted ones are going, those whose ssh never started were
// never told, the rest may have got it.
func toldOrNot(res []pexec.Result) (off, unsure, up []string) {
	for _, r := range res {
		switch {
		case r.Status == pexec.OK:
			off = append(off, r.Node)
		case r.Status == pexec.Error && r.Detail == pexec.NotStarted:
			up = append(up, r.Node)
		default:
			unsure = append(unsure, r.Node)
		}
	}
	return off, unsure, up
}
