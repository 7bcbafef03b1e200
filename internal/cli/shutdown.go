package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/localnode1"
	"github.com/clusterdebian/clusterdebian/internal/pexec"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/role"
	"github.com/clusterdebian/clusterdebian/internal/shutdown"
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

A permanent node1 set up with localnode1 (an installed machine) stays on
after the nodes unless --include-head is given.`,
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
			nodes, err := listNodes(cmd.Context(), c)
			if err != nil {
				return err
			}
			verb, action := "power off", "poweroff"
			if reboot {
				verb, action = "reboot", "reboot"
			}
			plan := shutdown.MakePlan(nodes)
			plan.KeepHead = localnode1.Installed() && !includeHead
			out := cmd.OutOrStdout()
			fmt.Fprint(out, plan.Describe(verb))
			if dryRun {
				return nil
			}
			ctx := cmd.Context()
			if len(plan.Nodes) > 0 {
				targets := make([]pexec.Target, len(plan.Nodes))
				for i, n := range plan.Nodes {
					targets[i] = pexec.Target{Name: n}
				}
				res := pexec.Run(ctx, targets, []string{"systemctl", action}, pexec.Options{Timeout: timeout})
				c := shutdown.Confirmer{
					Nodes: func(ctx context.Context) ([]registry.Node, error) {
						return listNodes(ctx, c)
					},
					Polls: max(int(grace/time.Second), 1),
					Wait:  shutdown.Sleep(time.Second),
				}
				vs := c.Confirm(ctx, res)
				if rep := shutdown.Report(vs); rep != "" {
					if !force {
						return &exitError{code: 1, msg: strings.TrimRight(rep, "\n") +
							"\nnode1 stays up; shut those down by hand, or run again with --force"}
					}
					fmt.Fprint(cmd.ErrOrStderr(), rep)
				}
				fmt.Fprintf(out, "%d node(s) confirmed\n", len(vs)-len(shutdown.Unconfirmed(vs)))
				// A node that has left is still shutting down from node1's
				// root: wait until it is off the network.
				fmt.Fprintf(out, "waiting for the nodes to go off the network (up to %s)\n", settle)
				ping := func(ctx context.Context, name string) bool {
					return exec.CommandContext(ctx, "ping", "-c", "1", "-W", "2", "-q", plan.Addr(name)).Run() == nil
				}
				if still := shutdown.WaitGone(ctx, plan.Nodes, max(int(settle/time.Second), 1), shutdown.Sleep(time.Second), ping); len(still) > 0 {
					msg := fmt.Sprintf("still answering after %s: %s", settle, strings.Join(still, ", "))
					if !force {
						return &exitError{code: 1, msg: msg + "\nnode1 stays up; run again with --force to power it off anyway"}
					}
					fmt.Fprintln(cmd.ErrOrStderr(), msg)
				}
			}
			if plan.KeepHead {
				fmt.Fprintln(out, "node1 stays on: it is a permanent node1 (localnode1); --include-head powers it off too")
				return nil
			}
			fmt.Fprintf(out, "%s this machine (node1)\n", verb)
			if b, err := exec.CommandContext(ctx, "systemctl", action).CombinedOutput(); err != nil {
				return fmt.Errorf("systemctl %s: %v: %s", action, err, strings.TrimSpace(string(b)))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&headURL, "head", "", "the head's address or URL (default: this machine)")
	f.BoolVar(&reboot, "reboot", false, "reboot instead of powering off")
	f.BoolVar(&dryRun, "dry-run", false, "say what would be done, and do nothing")
	f.BoolVar(&force, "force", false, "power off node1 even when some node did not confirm")
	f.BoolVar(&includeHead, "include-head", false, "on a permanent node1 (localnode1), power it off too; a live node1 always goes last")
	f.DurationVar(&timeout, "timeout", 20*time.Second, "give up on a node's ssh after this long")
	f.DurationVar(&settle, "settle", 3*time.Minute, "how long to wait for the nodes to go off the network before node1 goes")
	f.DurationVar(&grace, "grace", 30*time.Second, "how long to wait for a node whose connection dropped to leave the registry")
	return cmd
}
