package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/agent"
	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/role"
	"github.com/clusterdebian/clusterdebian/internal/version"
)

func newNodeCmd() *cobra.Command {
	var (
		headAddr, token, runDir string
		interval                time.Duration
		debug                   bool
	)
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run the node agent: join the cluster and heartbeat to the head",
		Long: `node joins this machine to the cluster: it makes the node's SSH host key
(in RAM, for this boot), registers with the head (MAC, address, cores,
memory), installs the SSH host certificate the head signs, then sends a
heartbeat with the node's load every few seconds. At shutdown it leaves the
cluster, so the head drops it from the MPI hostfiles at once.

On a network-booted node it starts at boot (clusterdebian-node.service) and
reads the head's address and the cluster token from the kernel command line
(clusterdebian.head= and clusterdebian.token=, which the head puts there).
The flags override them, to run the agent by hand.`,
		Example: `  clusterdebian node
  clusterdebian node --head 10.99.0.1 --token $(cat /var/lib/clusterdebian/token) --run-dir /tmp/agent`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			flags := cmd.Flags()
			cmdline, _ := os.ReadFile(role.ProcCmdline)
			o, cmdlineErr := agent.OptionsFromCmdline(string(cmdline))
			if flags.Changed("head") {
				u, err := registry.HeadURL(headAddr)
				if err != nil {
					return err
				}
				o.HeadURL = u
			}
			if flags.Changed("token") {
				o.Token = token
			}
			if o.HeadURL == "" || o.Token == "" {
				if cmdlineErr == nil { // an empty --head or --token
					cmdlineErr = errors.New("no head address or cluster token")
				}
				return fmt.Errorf("%w (use --head and --token to run by hand)", cmdlineErr)
			}
			o.Interval = interval
			o.RunDir = runDir
			if !flags.Changed("run-dir") {
				// The default folder is root's; a --run-dir lets anyone try
				// the agent by hand.
				if err := requireRoot("node"); err != nil {
					return err
				}
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			o.Logger = head.NewLogger(os.Stderr, level)
			// Under systemd, sshd starts after this agent is ready (it
			// needs the host certificate): the node is joining, out of the
			// hostfiles, until sshd answers on port 22, the port of the
			// image's sshd.
			if os.Getenv("INVOCATION_ID") != "" {
				o.SSHPort = 22
			}
			// Under systemd, sshd must reload when the head's CA changed:
			// it reads its host certificate only at start.
			if os.Getenv("INVOCATION_ID") != "" {
				o.CAChanged = func(ctx context.Context) {
					out, err := exec.CommandContext(ctx, "systemctl", "try-reload-or-restart", "ssh.service").CombinedOutput()
					if err != nil {
						o.Logger.Warn("reloading sshd", "err", err, "output", string(out))
					}
				}
			}
			// munged and slurmd read the munge key and slurmd's options at
			// start: restart the running ones when the head's changed. Not
			// waited for: slurmd is ordered after this agent.
			if os.Getenv("INVOCATION_ID") != "" {
				o.SlurmChanged = func(ctx context.Context) {
					out, err := exec.CommandContext(ctx, "systemctl", "--no-block", "try-restart", "munge.service", "slurmd.service").CombinedOutput()
					if err != nil {
						o.Logger.Warn("restarting munge and slurmd", "err", err, "output", string(out))
					}
				}
			}
			o.Logger.Info("clusterdebian node agent starting", "version", version.String(), "head", o.HeadURL)
			return agent.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&headAddr, "head", "", "the head's address or URL (default: clusterdebian.head= of the kernel command line)")
	f.StringVar(&token, "token", "", "the cluster token (default: clusterdebian.token= of the kernel command line)")
	f.DurationVar(&interval, "interval", 0, "time between heartbeats (default: what the head asks for)")
	f.StringVar(&runDir, "run-dir", agent.DefaultRunDir, "folder for this boot's SSH host key and certificate")
	f.BoolVar(&debug, "debug", false, "log every heartbeat problem in detail")
	return cmd
}
