package shutdown

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
)

// fakeSlurm is a Slurm controller on fakeCluster's clock: its jobs run
// until their end (never: until cancelled).
type fakeSlurm struct {
	f     *fakeCluster
	nodes []string
	jobs  map[string]time.Duration // id -> end
	// down makes every call fail.
	down  bool
	calls []string
}

func (s *fakeSlurm) Nodes(context.Context) ([]slurm.NodeState, error) {
	if s.down {
		return nil, errors.New("slurm_load_node: Unable to contact slurm controller")
	}
	var ns []slurm.NodeState
	for _, n := range s.nodes {
		ns = append(ns, slurm.NodeState{Name: n, State: "idle"})
	}
	return ns, nil
}

func (s *fakeSlurm) Jobs(context.Context) ([]slurm.Job, error) {
	if s.down {
		return nil, errors.New("no controller")
	}
	var js []slurm.Job
	for id, end := range s.jobs {
		if end == never || s.f.now < end {
			js = append(js, slurm.Job{ID: id, State: "RUNNING"})
		}
	}
	js = append(js, slurm.Job{ID: "99", State: "PENDING"})
	slices.SortFunc(js, func(a, b slurm.Job) int { return strings.Compare(a.ID, b.ID) })
	return js, nil
}

func (s *fakeSlurm) Update(_ context.Context, nodes []string, state, reason string) error {
	s.calls = append(s.calls, "update "+strings.Join(nodes, ",")+" "+state+" "+reason)
	return nil
}

func (s *fakeSlurm) Delete(context.Context, []string) error { return errors.New("not used") }

func (s *fakeSlurm) Cancel(_ context.Context, ids []string) error {
	s.calls = append(s.calls, "cancel "+strings.Join(ids, ","))
	for _, id := range ids {
		s.jobs[id] = s.f.now
	}
	return nil
}

func (s *fakeSlurm) Reconfigure(context.Context) error { return nil }

func slurmFake(t *testing.T, jobs map[string]time.Duration) (*fakeCluster, *fakeSlurm, *System) {
	f := newFake(t,
		&fakeNode{name: "node2", ssh: pexec.OK, leave: time.Second, silent: never, off: 2 * time.Second},
		&fakeNode{name: "node3", ssh: pexec.OK, leave: time.Second, silent: never, off: 2 * time.Second},
		&fakeNode{name: "node4", down: true},
	)
	s := &fakeSlurm{f: f, nodes: []string{"node1", "node2", "node3", "node4"}, jobs: jobs}
	sys := f.system()
	sys.Slurm = s
	return f, s, sys
}

var slurmDefaults = Options{Timeout: 20 * time.Second, Grace: 30 * time.Second, Settle: 3 * time.Minute, JobWait: time.Minute}

// TestRunDrainsAndWaits: the nodes going off (node1 too, not the down
// node4) are drained first; the shutdown waits for the running jobs, and
// only then are the nodes told to go. It says what it did.
func TestRunDrainsAndWaits(t *testing.T) {
	f, s, sys := slurmFake(t, map[string]time.Duration{"7": 20 * time.Second, "8": 40 * time.Second})
	if err := Run(context.Background(), sys, slurmDefaults); err != nil {
		t.Fatalf("Run: %v\n%s%s", err, f.out.String(), f.err.String())
	}
	if want := []string{"update node1,node2,node3 drain " + DrainReason}; !slices.Equal(s.calls, want) {
		t.Errorf("Slurm calls %q, want %q", s.calls, want)
	}
	for _, name := range []string{"node2", "node3"} {
		if at := f.told[name]; at < 40*time.Second {
			t.Errorf("%s told to go at %v, before the last job ended at 40s", name, at)
		}
	}
	out := f.out.String()
	for _, want := range []string{"Slurm: drained node[1-3]", "1 pending job(s) will not run: 99",
		"waiting up to 1m0s for the 2 running job(s) to end: 7 8", "Slurm: every job ended", "power off this machine (node1)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if len(f.local) != 1 {
		t.Errorf("node1 got %q, want one poweroff", f.local)
	}
}

// TestRunJobsOutlastWait: a job still running after JobWait stops the
// shutdown before anything is powered off; the nodes are resumed, and the
// error names the job and --force.
func TestRunJobsOutlastWait(t *testing.T) {
	f, s, sys := slurmFake(t, map[string]time.Duration{"7": never})
	err := Run(context.Background(), sys, slurmDefaults)
	var jr *JobsRunningError
	if !errors.As(err, &jr) || !slices.Equal(jr.Jobs, []string{"7"}) {
		t.Fatalf("Run = %v, want a JobsRunningError for job 7", err)
	}
	for _, want := range []string{"still running after 1m0s: 7", "nothing was powered off", "take jobs again", "--force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if f.execs != 0 || len(f.local) != 0 {
		t.Errorf("nodes told %d times, node1 %q: want nothing powered off", f.execs, f.local)
	}
	if want := []string{"update node1,node2,node3 drain " + DrainReason, "update node1,node2,node3 resume "}; !slices.Equal(s.calls, want) {
		t.Errorf("Slurm calls %q, want %q", s.calls, want)
	}
	if f.now < time.Minute {
		t.Errorf("gave up after %v, before JobWait", f.now)
	}
}

// TestRunForceCancels: with --force the running jobs are cancelled at
// once, and the shutdown goes on without waiting.
func TestRunForceCancels(t *testing.T) {
	f, s, sys := slurmFake(t, map[string]time.Duration{"7": never, "8": never})
	o := slurmDefaults
	o.Force = true
	if err := Run(context.Background(), sys, o); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := []string{"update node1,node2,node3 drain " + DrainReason, "cancel 7,8"}; !slices.Equal(s.calls, want) {
		t.Errorf("Slurm calls %q, want %q", s.calls, want)
	}
	if f.told["node2"] != 0 || !strings.Contains(f.out.String(), "cancelled the 2 running job(s) (--force): 7 8") {
		t.Errorf("node2 told at %v; output:\n%s", f.told["node2"], f.out.String())
	}
}

// TestRunSlurmDryRunAndDown: --dry-run only says what it would do; a
// controller that does not answer is reported and does not stop the
// shutdown; a permanent node1 that stays on is not drained.
func TestRunSlurmDryRunAndDown(t *testing.T) {
	f, s, sys := slurmFake(t, map[string]time.Duration{"7": never})
	o := slurmDefaults
	o.DryRun = true
	if err := Run(context.Background(), sys, o); err != nil {
		t.Fatal(err)
	}
	if len(s.calls) != 0 || f.execs != 0 {
		t.Errorf("dry run changed something: %q, %d execs", s.calls, f.execs)
	}
	for _, want := range []string{"Slurm: drain node[1-3] first", "wait up to 1m0s for the 1 running job(s): 7 (--force cancels them)"} {
		if !strings.Contains(f.out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, f.out.String())
		}
	}

	f, s, sys = slurmFake(t, nil)
	s.down = true
	if err := Run(context.Background(), sys, slurmDefaults); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.err.String(), "Slurm: the controller did not answer") || len(f.local) != 1 {
		t.Errorf("controller down: err %q, node1 %q", f.err.String(), f.local)
	}

	f, s, sys = slurmFake(t, nil)
	o = slurmDefaults
	o.PermanentHead = true
	if err := Run(context.Background(), sys, o); err != nil {
		t.Fatal(err)
	}
	if want := []string{"update node2,node3 drain " + DrainReason}; !slices.Equal(s.calls, want) {
		t.Errorf("permanent node1: Slurm calls %q, want %q", s.calls, want)
	}
	if len(f.local) != 0 {
		t.Errorf("permanent node1 got %q", f.local)
	}
}
