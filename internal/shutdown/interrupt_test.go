package shutdown

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// interruptedRun runs Run on sys with a context that cancel ends, and
// returns its *InterruptedError, failing the test on any other answer.
func interruptedRun(t *testing.T, ctx context.Context, f *fakeCluster, sys *System, o Options) *InterruptedError {
	t.Helper()
	err := Run(ctx, sys, o)
	var ie *InterruptedError
	if !errors.As(err, &ie) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Run interrupted = %v, want an *InterruptedError wrapping context.Canceled\n%s%s", err, f.out.String(), f.err.String())
	}
	if len(f.local) != 0 {
		t.Errorf("interrupted, yet node1 got %q", f.local)
	}
	t.Logf("%s", ie)
	return ie
}

// wantLines fails unless msg has each line.
func wantLines(t *testing.T, msg string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(msg, l) {
			t.Errorf("the message lacks %q:\n%s", l, msg)
		}
	}
}

// Ctrl-C while waiting for Slurm jobs: nothing was powered off, so every
// drain is undone and every node is still up.
func TestInterruptedWaitingForJobs(t *testing.T) {
	f, s, sys := slurmFake(t, map[string]time.Duration{"7": never})
	ctx, cancel := context.WithCancel(context.Background())
	sleep := sys.Sleep
	sys.Sleep = func(ctx context.Context, d time.Duration) error {
		if f.sleeps == 3 {
			cancel() // three polls into the job wait
		}
		return sleep(ctx, d)
	}
	ie := interruptedRun(t, ctx, f, sys, slurmDefaults)
	if f.execs != 0 {
		t.Errorf("interrupted before the nodes were told, yet %d command runs", f.execs)
	}
	if ie.Phase != "draining Slurm" || !slices.Equal(ie.Up, []string{"node2", "node3"}) || len(ie.Off)+len(ie.Unsure)+len(ie.Drained) != 0 ||
		!slices.Equal(ie.Resumed, []string{"node1", "node2", "node3"}) || ie.ResumeErr != nil {
		t.Errorf("interrupted in the job wait: %+v", ie)
	}
	want := []string{"update node1,node2,node3 drain " + DrainReason, "update node1,node2,node3 resume "}
	if !slices.Equal(s.calls, want) {
		t.Errorf("Slurm calls %q, want %q", s.calls, want)
	}
	wantLines(t, ie.Error(), "shutdown interrupted while draining Slurm; node1 stays up", "no node was told to power off",
		"still up (never told): node[2-3]", "Slurm: drain undone on node[1-3]: they stay up and take jobs again")
}

// Ctrl-C while the power-off commands run: node2 accepted it, node3's ssh
// was cut (it may have got it), node4's never started. node2 and node3
// stay drained; node1 and node4, which stay up, are resumed.
func TestInterruptedTellingNodes(t *testing.T) {
	f := newFake(t,
		&fakeNode{name: "node2", ssh: pexec.OK, leave: never, silent: never, off: never},
		&fakeNode{name: "node3", ssh: pexec.Error, detail: "cancelled", leave: never, silent: never, off: never},
		&fakeNode{name: "node4", ssh: pexec.Error, detail: pexec.NotStarted, leave: never, silent: never, off: never},
	)
	s := &fakeSlurm{f: f, nodes: []string{"node1", "node2", "node3", "node4"}, jobs: map[string]time.Duration{}}
	sys := f.system()
	sys.Slurm = s
	ctx, cancel := context.WithCancel(context.Background())
	exec := sys.Exec
	sys.Exec = func(ctx context.Context, nodes, argv []string, timeout time.Duration) []pexec.Result {
		cancel() // halfway through the commands
		return exec(ctx, nodes, argv, timeout)
	}
	ie := interruptedRun(t, ctx, f, sys, slurmDefaults)
	if ie.Phase != "telling the nodes to go" || !slices.Equal(ie.Off, []string{"node2"}) || !slices.Equal(ie.Unsure, []string{"node3"}) ||
		!slices.Equal(ie.Up, []string{"node4"}) || !slices.Equal(ie.Drained, []string{"node2", "node3"}) || !slices.Equal(ie.Resumed, []string{"node1", "node4"}) {
		t.Errorf("interrupted while telling the nodes: %+v", ie)
	}
	if f.sleeps != 0 {
		t.Errorf("interrupted, yet went on confirming (%d polls)", f.sleeps)
	}
	want := []string{"update node1,node2,node3,node4 drain " + DrainReason, "update node1,node4 resume "}
	if !slices.Equal(s.calls, want) {
		t.Errorf("Slurm calls %q, want %q", s.calls, want)
	}
	wantLines(t, ie.Error(), "powering off (confirmed): node2", "told to power off, not confirmed (may be going down): node3",
		"still up (never told): node4", "Slurm: node[2-3] left drained: off or going down", "Slurm: drain undone on node[1,4]")
}

// Ctrl-C while waiting for the nodes to go off the network, even with
// --force: every node confirmed, node1 stays up, and the answer says which
// still answered.
func TestInterruptedSettling(t *testing.T) {
	for _, force := range []bool{false, true} {
		f := newFake(t,
			&fakeNode{name: "node2", ssh: pexec.OK, leave: time.Second, silent: never, off: time.Second},
			&fakeNode{name: "node3", ssh: pexec.OK, leave: time.Second, silent: never, off: never},
		)
		sys := f.system()
		ctx, cancel := context.WithCancel(context.Background())
		sleep := sys.Sleep
		sys.Sleep = func(ctx context.Context, d time.Duration) error {
			if f.sleeps == 10 {
				cancel()
			}
			return sleep(ctx, d)
		}
		o := defaults
		o.Force = force
		ie := interruptedRun(t, ctx, f, sys, o)
		if ie.Phase != "waiting for the nodes to go off the network" || !slices.Equal(ie.Off, []string{"node2", "node3"}) ||
			!slices.Equal(ie.StillAnswering, []string{"node3"}) || len(ie.Unsure)+len(ie.Up) != 0 {
			t.Errorf("force %v: interrupted while settling: %+v", force, ie)
		}
		wantLines(t, ie.Error(), "of those, still answering on the network: node3")
	}
}

// Ctrl-C while listing the nodes: nothing was done.
func TestInterruptedListing(t *testing.T) {
	f := newFake(t, &fakeNode{name: "node2", ssh: pexec.OK})
	sys := f.system()
	ctx, cancel := context.WithCancel(context.Background())
	sys.Nodes = func(ctx context.Context) ([]registry.Node, error) {
		cancel()
		return nil, ctx.Err()
	}
	ie := interruptedRun(t, ctx, f, sys, defaults)
	if f.execs != 0 || ie.Phase != "listing the nodes" {
		t.Errorf("interrupted while listing: %d command runs, %+v", f.execs, ie)
	}
	wantLines(t, ie.Error(), "no node was told to power off")
}

// failingResume is a Slurm controller that cannot resume nodes.
type failingResume struct{ *fakeSlurm }

func (s failingResume) Update(ctx context.Context, nodes []string, state, reason string) error {
	if state == "resume" {
		s.calls = append(s.calls, "resume refused")
		return errors.New("slurm_update error: Unable to contact slurm controller")
	}
	return s.fakeSlurm.Update(ctx, nodes, state, reason)
}

// A drain that cannot be undone is named, with the command that undoes it.
func TestInterruptedResumeFails(t *testing.T) {
	f, s, sys := slurmFake(t, map[string]time.Duration{"7": never})
	sys.Slurm = failingResume{s}
	ctx, cancel := context.WithCancel(context.Background())
	sleep := sys.Sleep
	sys.Sleep = func(ctx context.Context, d time.Duration) error {
		cancel()
		return sleep(ctx, d)
	}
	ie := interruptedRun(t, ctx, f, sys, slurmDefaults)
	if ie.ResumeErr == nil {
		t.Errorf("resume failed, yet no ResumeErr: %+v", ie)
	}
	wantLines(t, ie.Error(), "node[1-3] stay up but could not be resumed", "scontrol update nodename=node[1-3] state=resume")
}
