package head

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
)

// The head's Slurm part: on node1 it writes slurm.conf (configless: every
// slurmd fetches it from slurmctld), makes the cluster's munge key at its
// first start and hands it to root's registrations, writes node1's own
// munge key and slurmd options, and keeps Slurm following the registry: a
// node down in the registry goes DOWN in Slurm, a pruned one is deleted.

// SlurmOptions have the head run the cluster's Slurm (cluster.scheduler =
// "slurm"), when it keeps a cluster root (Options.ClusterRoot).
type SlurmOptions struct {
	// Version is the installed Slurm's (slurm.InstalledVersion): the
	// configuration differs between releases.
	Version slurm.Version
	// Node1Jobs puts node1 into the partition (slurm.node1_jobs): its own
	// slurmd registers like a node's.
	Node1Jobs bool
	// Controller talks to slurmctld; default slurm.Host(). Tests fake it.
	Controller slurm.Controller
	// Restart restarts those of the units that run, without waiting;
	// default restartUnits (systemctl --no-block try-restart). Tests fake
	// it.
	Restart func(ctx context.Context, units ...string) error
}

// slurmUnits are node1's Slurm daemons, restarted when the head rewrites
// their configuration while they run: slurmctld reads SlurmctldHost only at
// its start (scontrol reconfigure does not move it), and slurmd its options.
var slurmUnits = []string{"slurmctld.service", "slurmd.service"}

// restartUnits restarts those of units that run (systemctl try-restart).
// --no-block: at node1's start they wait for the head (After=), so a
// blocking call from the head would wait for itself.
func restartUnits(ctx context.Context, units ...string) error {
	args := append([]string{"--no-block", "try-restart"}, units...)
	if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// SlurmSyncInterval is how often the head reads Slurm's state and brings
// it in line with the registry.
const SlurmSyncInterval = 10 * time.Second

// slurmPart is the head's Slurm state.
type slurmPart struct {
	ctl slurm.Controller
	mu  sync.Mutex
	st  slurm.Status
	// lastErr is the last error logged, so that a controller that is
	// down is not logged every interval.
	lastErr string
}

// setupSlurm writes Slurm's configuration and node1's Slurm files under
// root, and returns the munge key to hand to the nodes.
func (h *Head) setupSlurm(root string) ([]byte, error) {
	so := h.opts.Slurm
	key, err := slurm.EnsureMungeKey(h.opts.StateDir)
	if err != nil {
		return nil, optionError(InputStateDir, err)
	}
	conf := slurm.Conf{Controller: contract.HeadName, ControllerAddr: h.addr, Subnet: h.naming.Subnet,
		Version: so.Version}
	if slurm.PMIxPlugin(root) {
		conf.MPI = slurm.MPIPMIx
	}
	files := conf.Files()
	// A Slurm configuration the head did not write (a permanent node1 that
	// runs its own Slurm) is kept, and the head runs none. One an earlier
	// start wrote that says something else now (node1's address moved
	// with its lease on a LAN) is rewritten, and the daemons restarted.
	changed := false
	for p, text := range files {
		old, err := os.ReadFile(filepath.Join(root, p))
		if err == nil && !strings.HasPrefix(string(old), slurm.ConfHeader) {
			return nil, fmt.Errorf("%s was not written by clusterdebian: it is kept, and the cluster gets no Slurm of its own", filepath.Join(root, p))
		}
		changed = changed || (err == nil && string(old) != text)
	}
	for p, text := range files {
		if err := atomicfile.Write(filepath.Join(root, p), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	var opts *slurm.SlurmdOptions
	if so.Node1Jobs {
		opts = &slurm.SlurmdOptions{Name: contract.HeadName, Controller: h.addr.String(), CPUs: runtime.NumCPU()}
	}
	envPath := filepath.Join(root, contract.SlurmdEnvFile)
	oldEnv, envErr := os.ReadFile(envPath)
	if _, err := slurm.MachineFiles(root, key, opts); err != nil {
		return nil, err
	}
	// slurmd's options from an earlier start that changed (or went).
	changed = changed || (envErr == nil && (opts == nil || string(oldEnv) != opts.Env()))
	if changed {
		restart := so.Restart
		if restart == nil {
			restart = restartUnits
		}
		h.log.Info("Slurm: the configuration changed since the head's last start; restarting node1's Slurm daemons that run", "units", slurmUnits)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := restart(ctx, slurmUnits...)
		cancel()
		if err != nil {
			h.log.Warn("Slurm: restart them by hand (systemctl restart slurmctld slurmd)", "err", err)
		}
	}
	ctl := so.Controller
	if ctl == nil {
		ctl = slurm.Host()
	}
	h.slurm = &slurmPart{ctl: ctl, st: slurm.Status{Enabled: true}}
	h.log.Info("Slurm: configuration written; munge, slurmctld and slurmd start after the head",
		"version", so.Version.String(), "node1_jobs", so.Node1Jobs, "mpi", conf.MPI)
	return key, nil
}

// slurmPruned deletes pruned nodes from Slurm at once, so that sinfo no
// longer lists them when prune returns.
func (h *Head) slurmPruned(gone []registry.Node) {
	if h.slurm == nil || len(gone) == 0 {
		return
	}
	var names []string
	for _, n := range gone {
		names = append(names, n.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	known, err := h.slurm.ctl.Nodes(ctx)
	if err != nil {
		h.log.Warn("Slurm: cannot list its nodes to delete the pruned ones", "err", err)
		return
	}
	names = slices.DeleteFunc(names, func(n string) bool {
		return !slices.ContainsFunc(known, func(s slurm.NodeState) bool { return s.Name == n })
	})
	if err := (slurm.Plan{Delete: names}).Apply(ctx, h.slurm.ctl); err != nil {
		h.log.Warn("Slurm: deleting the pruned nodes", "nodes", names, "err", err)
		return
	}
	if len(names) > 0 {
		h.log.Info("Slurm: pruned nodes deleted", "nodes", names)
	}
}

// runSlurm reads Slurm's state every SlurmSyncInterval, for the status, and
// applies the registry's view (slurm.Reconcile).
func (h *Head) runSlurm(ctx context.Context) {
	if h.slurm == nil {
		return
	}
	t := time.NewTicker(SlurmSyncInterval)
	defer t.Stop()
	for {
		h.syncSlurm(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *Head) syncSlurm(ctx context.Context) {
	s := h.slurm
	cctx, cancel := context.WithTimeout(ctx, SlurmSyncInterval)
	defer cancel()
	st := slurm.Status{Enabled: true, Updated: time.Now().UTC()}
	nodes, err := s.ctl.Nodes(cctx)
	var jobs []slurm.Job
	if err == nil {
		jobs, err = s.ctl.Jobs(cctx)
	}
	if err == nil {
		plan := slurm.Reconcile(nodes, h.cluster.reg.Nodes())
		if len(plan.Down) > 0 || len(plan.Delete) > 0 {
			h.log.Info("Slurm: following the registry", "down", plan.Down, "delete", plan.Delete)
			err = plan.Apply(cctx, s.ctl)
		}
	}
	st.Nodes, st.Jobs = nodes, jobs
	if err != nil {
		st.Error = err.Error()
	}
	s.mu.Lock()
	s.st = st
	logIt := st.Error != s.lastErr
	s.lastErr = st.Error
	s.mu.Unlock()
	if logIt && st.Error != "" && ctx.Err() == nil {
		h.log.Warn("Slurm: the controller did not answer", "err", st.Error)
	} else if logIt {
		h.log.Info("Slurm: the controller answers", "nodes", len(nodes))
	}
}

// SlurmStatus returns Slurm's state as the head last read it; Enabled is
// false when the head runs no Slurm.
func (h *Head) SlurmStatus() slurm.Status {
	if h.slurm == nil {
		return slurm.Status{Nodes: []slurm.NodeState{}, Jobs: []slurm.Job{}}
	}
	h.slurm.mu.Lock()
	defer h.slurm.mu.Unlock()
	st := h.slurm.st
	if st.Nodes == nil {
		st.Nodes = []slurm.NodeState{}
	}
	if st.Jobs == nil {
		st.Jobs = []slurm.Job{}
	}
	return st
}

// serveSlurm answers GET slurm.PathStatus with SlurmStatus as JSON.
func (h *Head) serveSlurm(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(h.SlurmStatus()); err != nil && !errors.Is(err, http.ErrHandlerTimeout) {
		h.log.Debug("slurm status", "err", err)
	}
}
