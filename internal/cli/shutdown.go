package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/localnode1"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/role"
	"github.com/clusterdebian/clusterdebian/internal/shutdown"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
)

func newShutdownCmd() *cobra.Command {
	var (
		headURL       string
		reboot        bool
		dryRun        bool
		force         bool
		includeHead   bool
		timeout       time.Duration
		grace, settle time.Duration
		jobWait       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "shutdown [--reboot] [--dry-run]",
		Short: "Power off (or reboot) the whole cluster, node1 last (run as root on node1)",
		Long: `shutdown powers off every other node that is up, over ssh and in parallel,
waits until each has confirmed, then powers off node1 itself. Nodes run
from node1's root over NFS: node1 must go last, or they hang.

A node counts as confirmed when its systemctl answered, or when its ssh
connection dropped and the head then saw it leave (or go silent) within
--grace. When a node did not confirm, node1 stays up (so that the node
can still be reached and shut down) unless --force is given.

With Slurm, the nodes are drained first, so that no new job starts, and
shutdown waits up to --job-wait for the running jobs to end; when some
still run, it powers nothing off and the nodes take jobs again. --force
cancels the running jobs instead of waiting.

A permanent node1 set up with localnode1 (an installed machine) stays on
after the nodes unless --include-head is given.

Interrupted (Ctrl-C), shutdown stops where it is and never powers node1
off. It says which nodes are powering off, which were told but did not
confirm, and which were never told; in Slurm it leaves the nodes that go
drained and resumes the others (node1 among them). Running it again
finishes the job. It exits 130.`,
		Example: `  sudo clusterdebian shutdown --dry-run
  sudo clusterdebian shutdown --reboot`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role.Detect() == role.Node {
				return fmt.Errorf("shutdown runs on node1 (the head), not on a node")
			}
			if os.Geteuid() != 0 && !dryRun {
				return fmt.Errorf("shutdown must run as root on node1; try: sudo clusterdebian shutdown")
			}
			c, err := headClient(headURL, "", nil)
			if err != nil {
				return err
			}
			sys := shutdown.Host(func(ctx context.Context) ([]registry.Node, error) { return listNodes(ctx, c) },
				cmd.OutOrStdout(), cmd.ErrOrStderr())
			// The head runs Slurm: drain it first.
			var st slurm.Status
			if err := c.Call(cmd.Context(), http.MethodGet, slurm.PathStatus, nil, &st); err == nil && st.Enabled {
				sys.Slurm = slurm.Host()
			}
			err = shutdown.Run(cmd.Context(), sys, shutdown.Options{
				Reboot: reboot, DryRun: dryRun, Force: force,
				PermanentHead: localnode1.Installed(), IncludeHead: includeHead,
				Timeout: timeout, Grace: grace, Settle: settle, JobWait: jobWait,
			})
			var kept *shutdown.HeadKeptError
			if errors.As(err, &kept) {
				return &exitError{code: 1, msg: kept.Error()}
			}
			var jobs *shutdown.JobsRunningError
			if errors.As(err, &jobs) {
				return &exitError{code: 1, msg: jobs.Error()}
			}
			var stopped *shutdown.InterruptedError
			if errors.As(err, &stopped) {
				return &exitError{code: 130, msg: stopped.Error()}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&headURL, "head", "", "the head's address or URL (default: this machine)")
	f.BoolVar(&reboot, "reboot", false, "reboot instead of powering off")
	f.BoolVar(&dryRun, "dry-run", false, "say what would be done, and do nothing")
	f.BoolVar(&force, "force", false, "cancel running Slurm jobs instead of waiting for them, and power off node1 even when some node did not confirm")
	f.DurationVar(&jobWait, "job-wait", shutdown.DefaultJobWait, "how long to wait for running Slurm jobs once the nodes are drained; after it, nothing is powered off")
	f.BoolVar(&includeHead, "include-head", false, "on a permanent node1 (localnode1), power it off too; a live node1 always goes last")
	f.DurationVar(&timeout, "timeout", 20*time.Second, "give up on a node's ssh after this long")
	f.DurationVar(&settle, "settle", 3*time.Minute, "how long to wait for the nodes to go off the network before node1 goes")
	f.DurationVar(&grace, "grace", 30*time.Second, "how long to wait for a node whose connection dropped to leave the registry")
	return cmd
}
