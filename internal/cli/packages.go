package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/config"
	"github.com/clusterdebian/clusterdebian/internal/hosttools"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
)

func newPackagesCmd() *cobra.Command {
	var configPath string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "packages",
		Short: "Install the cluster's development packages (Open MPI, PVM) on this build host",
		Long: `packages installs on this machine the development packages of the parallel
stacks chosen in cluster.toml (cluster.parallel), so that MPI and PVM programs
can be built here before they go into an image: Open MPI with mpicc, and PVM
where this host's Debian packages it (bookworm).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			host := hosttools.HostSuite()
			if cfg.HasParallel("pvm") && host != "" && host != "bookworm" {
				return fmt.Errorf("cluster.parallel: \"pvm\" is packaged only in bookworm, and this host runs %s", host)
			}
			pkgs := imagebuild.DevelopmentPackages(cfg)
			fmt.Fprintf(cmd.OutOrStdout(), "packages: %s\n", strings.Join(pkgs, " "))
			if dryRun {
				return nil
			}
			if err := requireRoot("packages"); err != nil {
				return err
			}
			return hosttools.AptInstall(cmd.Context(), os.Stderr, pkgs...)
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "cluster.toml (default: the embedded default)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print the packages")
	return cmd
}
