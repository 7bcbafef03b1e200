// Package cli defines the clusterdebian command tree (cobra). Each file holds
// one noun or verb; the work itself lives in the packages under internal/.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/version"
)

// NewRootCommand returns the whole command tree.
func NewRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "clusterdebian",
		Short: "Build and run a throw-away HPC cluster from a Debian live image",
		Long: `ClusterDebian turns a room of ordinary machines into an MPI cluster in minutes.
One machine (node1, the head) boots a ClusterDebian live USB stick or CD and
serves DHCP, PXE and NFS on the cluster network; every other machine boots
from the network and joins. Nothing is written to any disk.

The same binary builds the image on a build host, runs the head daemon on
node1 and the node agent on every other node.`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(
		newVersionCmd(),
		newConfigCmd(),
		newBuildCmd(),
		newHeadCmd(),
		newPackagesCmd(),
		newDoctorCmd(),
		newManCmd(root),
		newIssueCmd(),
		newNodeCmd(),
		newStatusCmd(),
		newExecCmd(),
		newVerifyCmd(),
		newVerifyProbeCmd(),
		newPruneCmd(),
		newShutdownCmd(),
		newLocalNode1Cmd(),
		newVMCmd(),
	)
	return root
}

// Execute runs the command line and returns the process exit code.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := NewRootCommand()
	if err := root.ExecuteContext(ctx); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, "clusterdebian:", ee.msg)
			}
			return ee.code
		}
		fmt.Fprintln(os.Stderr, "clusterdebian:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	return 0
}

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func requireRoot(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s must run as root (it installs packages, mounts and sets file ownership); try: sudo clusterdebian %s", what, what)
	}
	return nil
}
